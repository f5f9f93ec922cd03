"""recipes/export_onnx.py: per-modality ONNX encoders that embed as PyTorch does (1e-4), run by onnxruntime."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.runs import ENV, REPO


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("onnx")
    result = subprocess.run(
        [sys.executable, "recipes/export_onnx.py", str(tiny_run["run"]), "--dataset", str(tiny_run["dataset"]),
         "--split", "test", "--num_items", "6", "--output_dir", str(output_dir)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return output_dir, result.stdout


def test_every_encoder_exports_and_matches_pytorch_on_real_inputs(exported):
    output_dir, stdout = exported
    report = json.loads((output_dir / "export_report.json").read_text())
    assert set(report["encoders"]) == {"text", "audio", "image"}
    for modality, entry in report["encoders"].items():
        assert "skipped" not in entry, entry
        assert entry["max_abs_difference"] <= 1e-4 and entry["items_checked"] == 7, (modality, entry)
        assert (output_dir / entry["file"]).exists()
        assert f"{modality}: {entry['file']}" in stdout
    # The audio graph reads the transcript's tokens (the recogniser's decoding loop stays in PyTorch).
    assert report["encoders"]["audio"]["inputs"][-2:] == ["transcript_input_ids", "transcript_attention_mask"]


def test_the_onnx_encoders_embed_new_inputs_of_other_shapes_like_pytorch_and_notice_a_changed_model(
    tiny_run, exported
):
    from PIL import Image

    from recipes.evaluation.retrieval import load_model_and_processor
    from recipes.export.onnx import OnnxEncoders

    output_dir, _ = exported
    model, processor = load_model_and_processor(str(tiny_run["run"]), device="cpu")
    encoders = OnnxEncoders(output_dir)
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(int(16000 * s)).astype(np.float32) * 0.1 for s in (0.3, 0.7, 0.5)]
    inputs = processor(
        text=["a yellow stripe", "a green circle number twelve", "red"],
        audio=waves,
        sampling_rate=16000,
        transcripts=["a b", "c", "d e f g"],
        images=[Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)) for _ in range(3)],
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = model.encode([("text",), ("audio",), ("image",)], **inputs)
    for modality in ("text", "audio", "image"):
        difference = np.abs(encoders.encode(modality, inputs) - expected[(modality,)].numpy()).max()
        assert difference <= 1e-4, (modality, difference)
    # The comparison can fail: a slightly changed model no longer matches its old export.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        changed = model.encode([("image",)], **inputs)[("image",)].numpy()
    assert np.abs(encoders.encode("image", inputs) - changed).max() > 1e-4


def test_the_space_refuses_onnx_encoders_exported_from_other_weights(tiny_run, exported):
    from recipes.evaluation.retrieval import load_model_and_processor
    from recipes.export.onnx import OnnxEncoders

    output_dir, _ = exported
    model, _ = load_model_and_processor(str(tiny_run["run"]), device="cpu")
    assert OnnxEncoders(output_dir, model=model).has("text")
    with torch.no_grad():
        model.text_projection.bias.add_(1e-3)
    with pytest.raises(ValueError, match="exported from other weights"):
        OnnxEncoders(output_dir, model=model)
