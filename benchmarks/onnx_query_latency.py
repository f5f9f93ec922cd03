"""Query latency of the retrieval Space's encoders: PyTorch against the ONNX export (onnxruntime), in the same process,
interleaved query by query so both see the same machine load.

    python recipes/export_onnx.py outputs/demo --dataset outputs/data/stamps     # once: writes outputs/demo/onnx
    python benchmarks/onnx_query_latency.py --model outputs/demo

A query is one real row of the split (batch 1), as the Space embeds it: a description, an image, or a spoken
description (with its transcript given, since Whisper's decoding loop stays in PyTorch either way: its time is
reported on its own line). Timed: the encoder call on the processor's outputs, and the whole query (processor +
encoder). The script checks that both encoders give the same embedding (1e-4) and stops otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(REPO / "outputs/demo"))
    parser.add_argument("--onnx", help="default: MODEL/onnx")
    parser.add_argument("--dataset", default=str(REPO / "outputs/data/stamps"))
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--queries", type=int, default=20, help="queries per modality (the first 2 are warm-up)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from recipes.data.retrieval import (
        RetrievalColumns,
        _decode_audio,
        _load_image,
        load_retrieval_dataset,
        prepare_for_lazy_decoding,
    )
    from recipes.evaluation.retrieval import load_model_and_processor
    from recipes.export.onnx import OnnxEncoders
    from recipes.utils.models import transcribes_audio

    if args.queries < 3:
        parser.error("--queries must be 3 or more (the first 2 are warm-up).")

    torch.set_num_threads(args.threads)
    model, processor = load_model_and_processor(args.model, device="cpu")
    model.eval()
    encoders = OnnxEncoders(args.onnx or Path(args.model) / "onnx", threads=args.threads, model=model)
    rows = load_retrieval_dataset(args.dataset)[args.split]
    rows = prepare_for_lazy_decoding(rows.select(range(min(args.queries, len(rows)))), RetrievalColumns())
    transcribes = transcribes_audio(model)

    def bad(column, cause):
        return ValueError(f"{column}: {cause}")

    def raw(modality: str, row: dict) -> dict:
        if modality == "text":
            return {"text": [row["text"]]}
        if modality == "image":
            return {"images": [_load_image(row["image"], "image", bad)]}
        wave, rate = _decode_audio(row["audio"], "audio", bad)
        return {"audio": [wave], "sampling_rate": rate}

    results: dict[str, dict[str, list[float]]] = {}
    print(f"{len(rows)} queries per modality from {args.split}, batch 1, {args.threads} threads")
    for modality in ("text", "image", "audio"):
        if not encoders.has(modality):
            print(
                f"{modality}: no ONNX encoder ({encoders.report['encoders'].get(modality, {}).get('skipped')})"
            )
            continue
        timings = {
            key: [] for key in ("pytorch_encoder", "onnx_encoder", "pytorch_query", "onnx_query", "asr")
        }
        for index in range(len(rows)):
            kwargs = raw(modality, rows[index])
            if modality == "audio" and transcribes:
                features = processor(
                    audio=kwargs["audio"], sampling_rate=kwargs["sampling_rate"], return_tensors="pt"
                )
                with torch.no_grad():
                    transcript, seconds = _timed(model.transcribe, features["input_features"])
                kwargs["transcripts"] = transcript
                timings["asr"].append(seconds)
            inputs, processing = _timed(lambda kwargs=kwargs: processor(**kwargs, return_tensors="pt"))
            with torch.no_grad():
                expected, torch_seconds = _timed(
                    lambda inputs=inputs, modality=modality: model.encode([(modality,)], **inputs)[
                        (modality,)
                    ]
                )
            actual, onnx_seconds = _timed(encoders.encode, modality, inputs)
            difference = float(np.abs(actual - expected.numpy()).max())
            if difference > 1e-4:
                raise SystemExit(f"{modality} query {index}: ONNX and PyTorch differ by {difference:.2e}")
            if index >= 2:  # warm-up
                timings["pytorch_encoder"].append(torch_seconds)
                timings["onnx_encoder"].append(onnx_seconds)
                timings["pytorch_query"].append(processing + torch_seconds)
                timings["onnx_query"].append(processing + onnx_seconds)
        medians = {key: statistics.median(values) * 1000 for key, values in timings.items() if values}
        results[modality] = medians
        line = (
            f"{modality:>5}: encoder PyTorch {medians['pytorch_encoder']:.1f} ms, ONNX {medians['onnx_encoder']:.1f} ms "
            f"({medians['pytorch_encoder'] / medians['onnx_encoder']:.2f}x); whole query {medians['pytorch_query']:.1f} "
            f"vs {medians['onnx_query']:.1f} ms ({medians['pytorch_query'] / medians['onnx_query']:.2f}x)"
        )
        if "asr" in medians:
            line += f"; + Whisper transcription {medians['asr']:.0f} ms (PyTorch, both)"
        print(line)
    return results


if __name__ == "__main__":
    main()
