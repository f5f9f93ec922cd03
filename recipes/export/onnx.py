"""ONNX export of a retrieval model's per-modality encoders, checked against PyTorch with onnxruntime.

Each encoder is one graph from the processor's outputs to the L2-normalised embedding:

- `text.onnx`: `input_ids`, `attention_mask` -> `pooled_embedding`
- `image.onnx`: `pixel_values` -> `pooled_embedding`
- `audio.onnx`: `input_features` (+ `transcript_input_ids`, `transcript_attention_mask` for a model that reads
  transcripts: the Whisper recogniser's greedy decoding loop stays in PyTorch) -> `pooled_embedding`

`export_report.json` records, per modality, the inputs, the largest difference from PyTorch on real inputs, or why
the modality was skipped. Uses `torch.onnx.export(..., dynamo=True)` (optimum's exporters do not install beside
transformers 5).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

REPORT = "export_report.json"
OPSET = 18


class _Encoder(nn.Module):
    """One modality of a retrieval model as a module of named tensors -> embedding."""

    def __init__(self, model, modality: str, input_names: list[str]):
        super().__init__()
        self.model, self.modality, self.input_names = model, modality, input_names

    def forward(self, *tensors):
        inputs = dict(zip(self.input_names, tensors, strict=True))
        return self.model.encode([(self.modality,)], **inputs)[(self.modality,)]


def input_names(model, modality: str, inputs) -> list[str]:
    """The processor outputs a modality's graph takes."""
    names = {
        "text": ["input_ids", "attention_mask"],
        "image": ["pixel_values"],
        "audio": ["input_features", "input_values", "audio_attention_mask"],
    }[modality]
    if modality == "audio" and "transcript_input_ids" in inputs:
        names += ["transcript_input_ids", "transcript_attention_mask"]
    return [name for name in names if name in inputs]


def _dynamic_shapes(names: list[str], inputs) -> tuple:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    text_length = Dim("text_length", min=2, max=4096)
    transcript_length = Dim("transcript_length", min=2, max=4096)
    shapes = []
    for name in names:
        if name in ("input_ids", "attention_mask"):
            shapes.append({0: batch, 1: text_length})
        elif name.startswith("transcript_"):
            shapes.append({0: batch, 1: transcript_length})
        else:
            shapes.append({0: batch})
    return (tuple(shapes),)  # one entry: the encoder's *tensors


def _single_item(names: list[str], tensors: tuple) -> tuple:
    """The first item of a batch, its token sequences cut to their unpadded length."""
    values = dict(zip(names, (t[:1] for t in tensors), strict=True))
    for ids, mask in (("input_ids", "attention_mask"), ("transcript_input_ids", "transcript_attention_mask")):
        if ids in values and mask in values:
            length = max(int(values[mask].sum()), 2)
            values[ids], values[mask] = values[ids][:, :length], values[mask][:, :length]
    return tuple(values[name] for name in names)


def export_encoders(
    model, processor, sample_inputs: dict[str, dict], output_dir: str | os.PathLike, tolerance: float = 1e-4
) -> dict:
    """Export each modality of `sample_inputs` (`{modality: processor output of real items}`) and check it.

    A modality whose export fails is skipped and reported with the reason; one whose embeddings differ from
    PyTorch by more than `tolerance` is an error (its file is removed)."""
    import onnxruntime

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from recipes.utils.models import model_digest

    model = model.eval().float()
    report: dict = {
        "model_digest": model_digest(model),
        "tolerance": tolerance,
        "opset": OPSET,
        "encoders": {},
    }
    for modality, inputs in sample_inputs.items():
        names = input_names(model, modality, inputs)
        tensors = tuple(inputs[name] for name in names)
        path = output_dir / f"{modality}.onnx"
        entry: dict = {"inputs": names, "file": path.name}
        started = time.perf_counter()
        encoder = _Encoder(model, modality, names).eval()
        with torch.no_grad():
            expected = encoder(*tensors).float().numpy()
        try:
            torch.onnx.export(
                encoder,
                tensors,
                str(path),
                input_names=names,
                output_names=["pooled_embedding"],
                dynamic_shapes=_dynamic_shapes(names, inputs),
                dynamo=True,
                opset_version=OPSET,
                external_data=False,
            )
        except Exception as error:  # the exporter's failures are many and version-specific: report, go on
            logger.warning("Skipping the %s encoder: the ONNX export failed: %s", modality, error)
            entry["skipped"] = f"{type(error).__name__}: {str(error).splitlines()[0][:500]}"
            path.unlink(missing_ok=True)
            report["encoders"][modality] = entry
            continue
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = session.run(
            ["pooled_embedding"], {n: t.numpy() for n, t in zip(names, tensors, strict=True)}
        )[0]
        difference = float(np.abs(actual - expected).max())
        # The graph is dynamic in batch and length: check a single query trimmed of its padding too.
        single = _single_item(names, tensors)
        with torch.no_grad():
            expected_single = encoder(*single).float().numpy()
        actual_single = session.run(
            ["pooled_embedding"], {n: t.numpy() for n, t in zip(names, single, strict=True)}
        )
        difference = max(difference, float(np.abs(actual_single[0] - expected_single).max()))
        entry.update(
            max_abs_difference=difference,
            items_checked=int(expected.shape[0]) + 1,
            export_seconds=round(time.perf_counter() - started, 1),
            megabytes=round(path.stat().st_size / 2**20, 1),
        )
        report["encoders"][modality] = entry
        if difference > tolerance:
            path.unlink()
            (output_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
            raise AssertionError(
                f"The ONNX {modality} encoder differs from PyTorch by {difference:.2e} > {tolerance:g} on "
                f"{expected.shape[0]} real inputs; see {output_dir / REPORT}."
            )
        logger.info(
            "%s encoder: max |ONNX - PyTorch| = %.2e on %d items", modality, difference, len(expected)
        )
    (output_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


class OnnxEncoders:
    """The exported encoders of a folder written by [`export_encoders`], run with onnxruntime. Given the `model`
    they must stand for, refuses an export of other weights (a retrained or different model)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None, model=None):
        import onnxruntime

        self.folder = Path(folder)
        report_file = self.folder / REPORT
        if not report_file.exists():
            raise FileNotFoundError(
                f"{report_file} is missing: export the encoders with recipes/export_onnx.py."
            )
        self.report = json.loads(report_file.read_text())
        if model is not None:
            from recipes.utils.models import model_digest

            if model_digest(model) != self.report.get("model_digest"):
                raise ValueError(
                    f"The ONNX encoders in {self.folder} were exported from other weights than this model's "
                    f"(digest {self.report.get('model_digest')} vs {model_digest(model)}): export them again with "
                    "recipes/export_onnx.py."
                )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for modality, entry in self.report["encoders"].items():
            if "skipped" not in entry:
                self.sessions[modality] = onnxruntime.InferenceSession(
                    str(self.folder / entry["file"]), options, providers=["CPUExecutionProvider"]
                )

    def has(self, modality: str) -> bool:
        return modality in self.sessions

    def encode(self, modality: str, inputs) -> np.ndarray:
        """Embeddings `(batch, dim)` of processor outputs (tensors or arrays)."""
        names = self.report["encoders"][modality]["inputs"]
        feed = {}
        for name in names:
            value = inputs[name]
            feed[name] = value.numpy() if torch.is_tensor(value) else np.asarray(value)
        return self.sessions[modality].run(["pooled_embedding"], feed)[0]
