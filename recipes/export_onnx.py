"""Export the per-modality encoders of a run folder to ONNX and check them against PyTorch with onnxruntime.

    python recipes/export_onnx.py outputs/demo --dataset outputs/data/stamps --split test

Writes `text.onnx`, `image.onnx`, `audio.onnx` and `export_report.json` to `--output_dir` (default `RUN_DIR/onnx`).
The check embeds `--num_items` real rows of the split both ways and fails above `--tolerance` (1e-4). A modality the
exporter cannot handle is skipped and the report says why. The retrieval Space uses these encoders for
single-modality queries (`--onnx`); `benchmarks/onnx_query_latency.py` compares their latency with PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.export.onnx import export_encoders  # noqa: E402


def sample_inputs(model, processor, dataset_path: str, split: str, num_items: int, cache_dir=None) -> dict:
    """Processor outputs of `num_items` real rows of a split, per modality (transcripts made by the model)."""
    from recipes.data.retrieval import (
        RetrievalCollator,
        RetrievalColumns,
        add_transcripts,
        load_retrieval_dataset,
        prepare_for_lazy_decoding,
        resolve_columns,
    )
    from recipes.utils.models import transcribes_audio

    columns = RetrievalColumns()
    rows = load_retrieval_dataset(dataset_path)[split]
    rows = prepare_for_lazy_decoding(rows.select(range(min(num_items, len(rows)))), columns)
    modalities = resolve_columns(rows, columns, None)
    if transcribes_audio(model) and "audio" in modalities:
        rows = add_transcripts(rows, model, processor, columns, cache_dir=cache_dir)
    batch = RetrievalCollator(processor, columns=columns)([rows[i] for i in range(len(rows))])
    batch.pop("group_ids")
    return {modality: batch for modality in modalities}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="a saved model folder (or Hub id)")
    parser.add_argument("--dataset", required=True, help="the dataset whose rows check the export")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num_items", type=int, default=16)
    parser.add_argument("--output_dir", help="default: RUN_DIR/onnx")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from recipes.evaluation.retrieval import load_model_and_processor

    model, processor = load_model_and_processor(args.run_dir, device="cpu")
    inputs = sample_inputs(model, processor, args.dataset, args.split, args.num_items)
    if args.output_dir is None and not Path(args.run_dir).is_dir():
        parser.error(f"{args.run_dir} is not a local folder: give --output_dir for the ONNX files.")
    output_dir = Path(args.output_dir or Path(args.run_dir) / "onnx")
    report = export_encoders(model, processor, inputs, output_dir, tolerance=args.tolerance)
    print(json.dumps(report, indent=2))
    for modality, entry in report["encoders"].items():
        if "skipped" in entry:
            print(f"{modality}: skipped ({entry['skipped']})")
        else:
            print(
                f"{modality}: {entry['file']} ({entry['megabytes']} MB), max |ONNX - PyTorch| "
                f"{entry['max_abs_difference']:.2e} on {entry['items_checked']} items"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
