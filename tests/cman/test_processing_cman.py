import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from modeling.cman import CmanModel, CmanProcessor
from tests.tiny import AUDIO_FRAMES, IMAGE_SIZE, MEL_BINS, random_batch, tiny_cman_config, tiny_processor


@pytest.fixture(scope="module")
def processor(tmp_path_factory) -> CmanProcessor:
    return tiny_processor(tmp_path_factory.mktemp("processor"))


@pytest.mark.parametrize(
    ("modalities", "keys"),
    [
        (("text",), {"input_ids", "attention_mask"}),
        (("audio",), {"input_values"}),
        (("images",), {"pixel_values"}),
        (("text", "audio", "images"), {"input_ids", "attention_mask", "input_values", "pixel_values"}),
    ],
)
def test_any_subset_of_modalities_gives_the_matching_model_inputs(processor, modalities, keys):
    batch = random_batch(3)
    kwargs = {m: batch[m] for m in modalities}
    if "audio" in modalities:
        kwargs["sampling_rate"] = 16000
    features = processor(**kwargs)
    assert set(features) == keys
    if "pixel_values" in keys:
        assert features["pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    if "input_values" in keys:
        assert features["input_values"].shape == (3, AUDIO_FRAMES, MEL_BINS)
    model = CmanModel(tiny_cman_config()).eval()
    with torch.no_grad():
        model(**features)


def test_audio_is_resampled_to_the_feature_extractor_rate(processor):
    t = np.arange(44100 * 0.3) / 44100
    wave_44k = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    t16 = np.arange(16000 * 0.3) / 16000
    wave_16k = np.sin(2 * np.pi * 440 * t16).astype(np.float32)
    resampled = processor(audio=[wave_44k], sampling_rate=44100)["input_values"]
    native = processor(audio=[wave_16k], sampling_rate=16000)["input_values"]
    torch.testing.assert_close(resampled, native, atol=0.5, rtol=0.05)


def test_stereo_audio_is_averaged_to_mono(processor):
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    stereo = np.stack([wave, wave])
    torch.testing.assert_close(
        processor(audio=[stereo], sampling_rate=16000)["input_values"],
        processor(audio=[wave], sampling_rate=16000)["input_values"],
    )


def test_a_clip_longer_than_the_window_is_truncated_and_logged(processor, caplog):
    long_wave = np.zeros(16000 * 2, dtype=np.float32)  # the tiny AST window is 0.48 s
    with caplog.at_level(logging.INFO, logger="modeling.cman.processing"):
        features = processor(audio=[long_wave, long_wave[:100]], sampling_rate=16000)
    assert features["input_values"].shape[1] == AUDIO_FRAMES
    assert "truncated" in caplog.text.lower() and "[0]" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"audio": [np.zeros(100, np.float32)]}, ValueError, "sampling_rate"),
        ({"audio": [np.zeros(100, np.float32)], "sampling_rate": 0}, ValueError, "positive integer"),
        ({"audio": [np.zeros(100, np.float32)], "sampling_rate": 16000.5}, ValueError, "positive integer"),
        ({"audio": [np.zeros(100, np.float32)], "sampling_rate": 16}, ValueError, "too low"),
        (
            {"audio": [np.zeros(100, np.float32), np.zeros(0, np.float32)], "sampling_rate": 16000},
            ValueError,
            r"audio\[1\] is empty",
        ),
        ({"audio": [np.full(100, np.nan, np.float32)], "sampling_rate": 16000}, ValueError, "NaN"),
        (
            {"audio": [np.zeros(16000 * 600, np.float32)], "sampling_rate": 16000},
            ValueError,
            r"audio\[0\] lasts 600.0 s",
        ),
        ({"images": [Image.new("RGB", (8, 8)), 42]}, TypeError, r"images\[1\] is a int, not an image"),
        ({"text": ["a dog", "   "]}, ValueError, r"text\[1\] is empty"),
        ({}, ValueError, "at least one"),
        ({"text": ["a dog"], "transcripts": ["a dog"]}, ValueError, "pass the clips as `audio=`"),
        (
            {"audio": [np.zeros(800, np.float32)] * 2, "sampling_rate": 16000, "transcripts": ["a dog"]},
            ValueError,
            "1 transcripts for 2 audio clips",
        ),
        (
            {"audio": [np.zeros(800, np.float32)], "sampling_rate": 16000, "transcripts": [None]},
            TypeError,
            r"transcripts\[0\] is a NoneType",
        ),
    ],
)
def test_bad_inputs_raise_errors_naming_the_item(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        processor(**kwargs)


def test_a_corrupt_image_file_is_named(processor, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10), "red").save(good)
    assert processor(images=[str(good)])["pixel_values"].shape[0] == 1
    with pytest.raises(ValueError, match="broken.png"):
        processor(images=[str(good), str(broken)])


def test_auto_processor_round_trip_in_a_clean_process(processor, tmp_path):
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_cman.CmanProcessor"
    batch = random_batch(2)
    expected = processor(**batch)
    in_process = AutoProcessor.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    for key, value in in_process(**batch).items():
        torch.testing.assert_close(value, expected[key])
    script = f"""
import sys
sys.modules["modeling"] = None
import numpy as np, torch
from transformers import AutoProcessor
p = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
assert type(p).__name__ == "CmanProcessor" and p.max_audio_seconds == 60.0
out = p(text=["a dog barks"], audio=[np.zeros(4000, np.float32)], sampling_rate=16000)
torch.save({{k: v for k, v in out.items()}}, "out.pt")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = torch.load(tmp_path / "out.pt", weights_only=True)
    expected = processor(text=["a dog barks"], audio=[np.zeros(4000, np.float32)], sampling_rate=16000)
    for key, value in expected.items():
        torch.testing.assert_close(reloaded[key], value)


def test_transcripts_are_tokenized_like_text_and_may_be_empty(processor):
    waves = [np.zeros(800, np.float32), np.zeros(1600, np.float32)]
    features = processor(
        audio=waves, sampling_rate=16000, transcripts=["a dog barks at the red fire truck", ""]
    )
    text = processor(text=["a dog barks at the red fire truck"])
    length = int(text["attention_mask"].sum())
    torch.testing.assert_close(features["transcript_input_ids"][0, :length], text["input_ids"][0])
    # An empty transcript (a clip without speech) is just the special tokens.
    assert features["transcript_attention_mask"].sum(-1).tolist() == [length, 2]


def test_modalities_may_have_different_counts_as_clips_processor_allows(processor):
    """Candidate captions for one image (zero-shot classification); the model refuses to fuse or contrast them."""
    features = processor(text=["a dog", "a cat", "a bird"], images=[Image.new("RGB", (8, 8))])
    assert features["input_ids"].shape[0] == 3 and features["pixel_values"].shape[0] == 1
    model = CmanModel(tiny_cman_config()).eval()
    with torch.no_grad():
        assert model(**features).logits_per_image.shape == (1, 3)
    with pytest.raises(ValueError, match="same batch size"):
        model(**features, fuse=True)


def test_tokenizer_settings_are_honoured_and_unknown_keywords_refused(processor):
    texts = ["a dog", "a cat sleeps on a chair in the sun"]
    longest = processor(text=texts)["input_ids"].shape[1]
    assert processor(text=texts, padding="max_length", max_length=20)["input_ids"].shape == (2, 20)
    assert processor(text=texts, max_length=4)["input_ids"].shape == (2, 4)  # truncated
    assert (
        processor(text=texts, padding="max_length", max_length=20)["attention_mask"].sum(1).max() == longest
    )
    with pytest.raises(TypeError, match="paddding"):
        processor(text=texts, paddding="max_length")
