"""Towers run in two halves (a frozen prefix without gradients, then the rest), and the frozen prefix's states are
cached by content: the same outputs as the whole tower, a cache that a changed tower or input never reads from, and
no layer that trains ever cached."""

import pytest
import torch
from transformers import ASTModel, RobertaModel, TimmWrapperConfig, TimmWrapperModel, ViTModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from modeling.cman import CmanModel
from modeling.common.towers import FrozenPrefixCache, frozen_prefix_length, run_prefix, run_tail
from tests.cman.test_modeling_cman import cman_inputs
from tests.tiny import (
    AUDIO_FRAMES,
    IMAGE_SIZE,
    MEL_BINS,
    tiny_audio_config,
    tiny_cman_config,
    tiny_image_config,
    tiny_text_config,
    tiny_whisper_config,
)


def tiny_timm_tower():
    config = TimmWrapperConfig.from_dict(
        {"architecture": "tf_efficientnet_lite0", "num_classes": 10, "pretrained_cfg": {}}
    )
    return TimmWrapperModel(config)


def towers_and_inputs():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    whisper_config = tiny_whisper_config()
    whisper_config.is_encoder_decoder = False
    return {
        "roberta": (RobertaModel(tiny_text_config(), add_pooling_layer=False), {"input_ids": ids}, mask),
        "ast": (ASTModel(tiny_audio_config()), {"input_values": torch.randn(3, AUDIO_FRAMES, MEL_BINS, generator=generator)}, None),
        "vit": (ViTModel(tiny_image_config(), add_pooling_layer=False), {"pixel_values": torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)}, None),
        "whisper": (WhisperEncoder(whisper_config), {"input_features": torch.randn(3, MEL_BINS, 100, generator=generator)}, None),
        "timm": (tiny_timm_tower(), {"pixel_values": torch.randn(2, 3, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)}, None),
    }  # fmt: skip


@pytest.mark.parametrize("family", ["roberta", "ast", "vit", "whisper", "timm"])
def test_prefix_then_tail_is_the_whole_tower_at_every_split(family):
    tower, inputs, mask = towers_and_inputs()[family]
    tower.eval().requires_grad_(False)
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": mask}
        whole = tower(**inputs, **kwargs).last_hidden_state
        stages = frozen_prefix_length(tower)  # everything frozen: the input stage and every layer
        assert stages > 2
        for length in range(1, stages + 1):
            split = run_tail(tower, length, run_prefix(tower, length, inputs, mask), mask)
            real = slice(None) if mask is None else mask.bool()
            torch.testing.assert_close(
                split[real], whole[real], rtol=0, atol=1e-6, msg=f"split after {length}"
            )


def test_the_frozen_prefix_stops_at_the_first_layer_lora_adapts():
    model = CmanModel(tiny_cman_config())
    assert model.frozen_prefixes() == {
        "text": 3,
        "audio": 3,
        "image": 3,
    }  # input stage + 2 layers each, all frozen
    targets = [t for t in model.lora_target_modules() if ".layer.1." in t or ".layers.1." in t]
    model.apply_lora(r=2, alpha=4, dropout=0.0, target_modules=targets)
    assert model.frozen_prefixes() == {
        "text": 2,
        "audio": 2,
        "image": 2,
    }  # layer 1 adapted: not in the prefix
    unfrozen = CmanModel(tiny_cman_config(freeze_encoders=False))
    assert unfrozen.frozen_prefixes() == {
        "text": 0,
        "audio": 0,
        "image": 0,
    }  # towers that train are never split


def lora_model():
    torch.manual_seed(0)
    model = CmanModel(tiny_cman_config())
    targets = [t for t in model.lora_target_modules() if ".layer.1." in t or ".layers.1." in t]
    peft_model = model.apply_lora(r=2, alpha=4, dropout=0.0, target_modules=targets)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return model, peft_model


def test_a_cached_prefix_gives_the_uncached_outputs_and_is_read_on_the_second_pass(tmp_path):
    model, peft_model = lora_model()
    peft_model.eval()
    inputs = cman_inputs(model.config)
    with torch.no_grad():
        expected = peft_model(**inputs, fuse=True)
        cache = FrozenPrefixCache(tmp_path / "cache")
        model.enable_frozen_prefix_cache(cache)
        first, second = peft_model(**inputs, fuse=True), peft_model(**inputs, fuse=True)
    for output in (first, second):
        for key in ("text_embeds", "audio_embeds", "image_embeds", "fused_embeds"):
            torch.testing.assert_close(output[key], expected[key], rtol=0, atol=1e-6, msg=key)
    summary = cache.summary()
    assert sorted(name.rsplit("-", 2)[0] for name in summary) == [
        "audio-spectrogram-transformer",
        "roberta",
        "vit",
    ]
    assert all(stats == {"hits": 4, "misses": 4, "rows": 4} for stats in summary.values())
    # Saved, the rows serve a new cache (another run) without computing anything again.
    cache.save()
    again = FrozenPrefixCache(tmp_path / "cache")
    model.enable_frozen_prefix_cache(again)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).text_embeds, expected.text_embeds, rtol=0, atol=1e-6)
    assert all(stats["misses"] == 0 for stats in again.summary().values())


def test_the_adapted_layers_are_never_cached():
    model, peft_model = lora_model()
    peft_model.eval()
    inputs = cman_inputs(model.config)
    model.enable_frozen_prefix_cache(FrozenPrefixCache())
    with torch.no_grad():
        before = peft_model(**inputs).text_embeds
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name and "text_model" in name:
                parameter.add_(1.0)  # training changes the adapted layer...
        after = peft_model(**inputs).text_embeds
        model.enable_frozen_prefix_cache(None)
        uncached = peft_model(**inputs).text_embeds
    assert not torch.allclose(after, before)  # ...and the cached model sees it
    torch.testing.assert_close(after, uncached, rtol=0, atol=1e-6)


def test_a_changed_input_or_tower_is_a_miss_and_padding_is_not():
    model, peft_model = lora_model()
    peft_model.eval()
    inputs = cman_inputs(model.config)
    cache = FrozenPrefixCache()
    model.enable_frozen_prefix_cache(cache)
    text = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        peft_model(**text)
        changed = {**text, "input_ids": text["input_ids"].clone()}
        changed["input_ids"][2, 3] += 1  # one caption changes: one miss
        peft_model(**changed)
        padded = {name: torch.nn.functional.pad(value, (0, 3)) for name, value in text.items()}
        padded["input_ids"][:, -3:] = (
            model.config.text_config.pad_token_id
        )  # the same captions, padded further
        peft_model(**padded)
    (stats,) = cache.summary().values()
    assert stats == {"hits": 3 + 4, "misses": 4 + 1, "rows": 5}
    # The same towers built again (another run) share the namespace; towers with other weights get their own.
    torch.manual_seed(0)
    same = CmanModel(tiny_cman_config())
    torch.manual_seed(1)
    other = CmanModel(tiny_cman_config())
    namespace = next(iter(cache.summary()))
    assert cache.namespace(same.text_model, 2) == namespace
    assert cache.namespace(other.text_model, 2) != namespace


def test_frozen_prefix_layers_run_without_dropout_in_training():
    model, peft_model = lora_model()
    peft_model.train()
    layers = model.text_model.encoder.layer
    assert not layers[0].training and layers[1].training  # layer 0 is in the prefix, layer 1 is adapted
    assert not model.text_model.embeddings.training
