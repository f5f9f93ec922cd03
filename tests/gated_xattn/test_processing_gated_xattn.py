"""The generator's processor: prompts in the decoder's chat format, left padding, targets with labels, the chat
input of the image-text-to-text pipeline, and errors that name the problem."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from modeling.gated_xattn import GatedXAttnProcessor
from tests.tiny import random_batch, tiny_gated_xattn_processor


@pytest.fixture
def processor(tmp_path):
    return tiny_gated_xattn_processor(tmp_path)


def decoded(processor, ids, mask):
    return processor.tokenizer.decode(ids[mask.bool()])


def test_prompts_are_chat_turns_left_padded(processor):
    batch = processor(images=random_batch(2)["images"], text=["what colour is it?", "describe"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["pixel_values"].shape[0] == 2
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][1, 0]  # padded on the left
    first = decoded(processor, batch["input_ids"][0], batch["attention_mask"][0])
    assert first.endswith("<|im_start|>user\nwhat colour is it?<|im_end|>\n<|im_start|>assistant\n")
    assert "labels" not in batch


def test_media_without_text_get_their_default_prompt(processor):
    waves = random_batch(2)
    images = processor(images=waves["images"])
    sounds = processor(audio=waves["audio"], sampling_rate=16000)
    assert "Describe the image." in decoded(processor, images["input_ids"][0], images["attention_mask"][0])
    assert "Describe the sound." in decoded(processor, sounds["input_ids"][0], sounds["attention_mask"][0])
    assert "input_values" in sounds and "pixel_values" not in sounds


def test_targets_follow_the_prompt_and_only_they_are_labelled(processor):
    batch = processor(
        images=random_batch(2)["images"], text=["a", "b"], targets=["a red dog", "the bird sings"]
    )
    for row, target in enumerate(["a red dog", "the bird sings"]):
        labelled = batch["labels"][row] != -100
        assert processor.tokenizer.decode(batch["labels"][row][labelled]) == target + "<|im_end|>"
        assert labelled[-1] and torch.equal(batch["input_ids"][row][labelled], batch["labels"][row][labelled])
        full = decoded(processor, batch["input_ids"][row], batch["attention_mask"][row])
        assert full.endswith("<|im_start|>assistant\n" + target + "<|im_end|>")


def test_a_long_target_is_truncated_before_the_end_token(tmp_path):
    processor = tiny_gated_xattn_processor(tmp_path)
    processor.target_max_length = 3
    batch = processor(text=["x"], targets=["a dog barks at the red fire truck"])
    labelled = batch["labels"][0][batch["labels"][0] != -100]
    assert len(labelled) == 4 and labelled[-1] == processor.end_of_turn_id


@pytest.mark.parametrize("call,message", [
    (lambda p, b: p(images=b["images"], audio=b["audio"], sampling_rate=16000), "not both"),
    (lambda p, b: p(images=b["images"][:2], text=["a", "b", "c"]), "3 prompts for 2 images"),
    (lambda p, b: p(text=["a", "b"], targets=["x"]), "1 targets for 2 prompts"),
    (lambda p, b: p(), "needs `text=`"),
    (lambda p, b: p(text=[""]), r"text\[0\] is empty"),
])  # fmt: skip
def test_bad_calls_say_what_is_wrong(processor, call, message):
    with pytest.raises(ValueError, match=message):
        call(processor, random_batch(3))


def test_an_unknown_keyword_is_refused(processor):
    with pytest.raises(TypeError, match="targetz"):
        processor(text=["a"], targetz=["b"])


def test_chat_messages_with_an_image_give_the_same_inputs_as_a_call(processor):
    image = random_batch(1)["images"][0]
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what colour is it?"}]}]  # fmt: skip
    from_chat = processor.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    direct = processor(images=[image], text=["what colour is it?"])
    for key in ("input_ids", "attention_mask", "pixel_values"):
        torch.testing.assert_close(from_chat[key], direct[key], rtol=0, atol=0)
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    assert text.endswith("what colour is it?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_messages_with_audio(processor):
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    chat = [{"role": "user", "content": [{"type": "audio", "audio": wave, "sampling_rate": 16000}, {"type": "text", "text": "what is it?"}]}]  # fmt: skip
    inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert "input_values" in inputs and inputs["input_ids"].shape[0] == 1
    chat[0]["content"][0]["sampling_rate"] = 8000
    with pytest.raises(ValueError, match="at 8000 Hz"):
        processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)


def test_saved_processor_reloads_with_the_same_outputs(processor, tmp_path):
    from modeling.gated_xattn import GatedXAttnConfig  # noqa: F401  (registers the family)

    processor.save_pretrained(tmp_path / "saved")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    assert isinstance(reloaded, GatedXAttnProcessor) and reloaded.tokenizer.padding_side == "left"
    images = random_batch(2)["images"]
    expected, actual = (
        processor(images=images, targets=["a", "b"]),
        reloaded(images=images, targets=["a", "b"]),
    )
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)


def test_post_process_decodes_a_batch_or_a_row(processor):
    ids = processor.tokenizer(["a red dog", "a cat"], add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]  # fmt: skip
    assert processor.post_process_image_text_to_text(ids) == ["a red dog", "a cat"]
    assert processor.post_process_image_text_to_text(ids[1]) == ["a cat"]


def test_a_corrupt_image_is_named(processor, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(Exception, match=r"images\[1\]"):
        processor(images=[Image.new("RGB", (8, 8)), str(broken)])
