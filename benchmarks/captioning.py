"""The captioning / open-ended VQA table: the generator family (gated cross-attention over SmolLM2-135M-Instruct) on
the stamps `test` split, beside its baselines on the same rows: the frozen decoder without the media, the
nearest-training-caption retrieval baseline (CMAN of the main job) and, for VQA, the matching families'
answer classifiers with chance (benchmarks/matching_vqa.py).

    python benchmarks/captioning.py            # train (unless done), evaluate, outputs/captioning/captioning.md
    python benchmarks/captioning.py --fresh    # retrain

The run is `recipes/train_captioning.py recipes/configs/gated_xattn_captioning.yaml` under `accelerate launch`
(image and sound captioning and VQA answers interleaved, 2 epochs, batch 16, lr 5e-4); a folder that already holds
`eval_results.json` from the same command and config text is not trained again. The decoder folder and the VQA
dataset are built first when missing; the retrieval baseline needs `outputs/demo` (`make demo`) and the VQA
classifier rows `outputs/vqa/matching_vqa.json` (`python benchmarks/matching_vqa.py`); a missing one leaves its rows
out, saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CONFIG = "recipes/configs/gated_xattn_captioning.yaml"


def train(args) -> Path:
    output_dir = Path(args.output_dir)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes/accelerate_configs/single_process.yaml"),
        "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
        str(REPO / "recipes/train_captioning.py"), str(REPO / CONFIG), "--output_dir", str(output_dir),
        *args.extra,
    ]  # fmt: skip
    record = output_dir / "benchmark_command.json"
    recorded = {"command": command[1:], "config": (REPO / CONFIG).read_text()}
    previous = json.loads(record.read_text()) if record.exists() else None
    if (output_dir / "eval_results.json").exists() and not args.fresh and previous in (None, recorded):
        print(f"[captioning] trained already ({output_dir})")
        return output_dir
    if output_dir.exists() and (args.fresh or previous != recorded):
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(recorded))
    print(f"[captioning] training ({output_dir})", flush=True)
    started = time.perf_counter()
    with open(output_dir / "benchmark.log", "a") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"[captioning] trained in {time.perf_counter() - started:.0f} s", flush=True)
    return output_dir


def ensure_inputs(args) -> None:
    from recipes.towers import DECODER_NAMES, ensure_towers

    ensure_towers("outputs/towers", names=DECODER_NAMES)
    if not (Path(args.vqa_dataset) / "dataset_dict.json").exists():
        from recipes.data.stamps_vqa import build_stamps_vqa_dataset

        build_stamps_vqa_dataset(args.dataset, args.vqa_dataset)
    for path, what in ((args.retriever, "the retrieval baseline (run `make demo`)"),
                       (args.matching_vqa, "the VQA classifier rows (run `python benchmarks/matching_vqa.py`)")):  # fmt: skip
        if not Path(path).exists():
            print(f"[captioning] {path} is missing: {what} is left out of the table.")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default="outputs/captioning/gated_xattn")
    parser.add_argument("--dataset", default="outputs/data/stamps")
    parser.add_argument("--vqa_dataset", default="outputs/data/stamps_vqa")
    parser.add_argument("--retriever", default="outputs/demo")
    parser.add_argument("--matching_vqa", default="outputs/vqa/matching_vqa.json")
    parser.add_argument("--fresh", action="store_true", help="retrain even when the run is done")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to the training run"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_inputs(args)
    run = train(args)
    from recipes.evaluate_captioning import main as evaluate

    evaluate(
        [
            "--model",
            str(run),
            "--baselines",
            "--retriever",
            args.retriever,
            "--matching_vqa",
            args.matching_vqa,
        ]
    )
    table = (run / "captioning_results.md").read_text()
    summary = Path(args.output_dir).parent / "captioning.md"
    summary.write_text(table)
    print(f"Wrote {summary} and {run / 'captioning_results.json'}")
    return json.loads((run / "captioning_results.json").read_text())


if __name__ == "__main__":
    main()
