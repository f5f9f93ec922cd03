"""The matching / VQA table: the early-fusion and cross-attention families on the stamps VQA `test` split, beside a
question-only baseline (the early-fusion model and training, every image a plain grey) and chance; their
image-text matching accuracy; and what their matching head gains re-ranking CMAN's text<->image results, beside
an early-fusion model trained on the pairs alone.

    python benchmarks/matching_vqa.py          # every row, then outputs/vqa/matching_vqa.md (+ .json)
    python benchmarks/matching_vqa.py --rows early_fusion cross_attention

Each row runs `recipes/train_vqa.py` with its family's YAML (`recipes/configs/<family>_vqa.yaml`: the main job's
frozen towers, a multi-task run interleaving VQA and description-image pair batches, 10 epochs, batch 32, lr 1e-3),
then evaluates on `test`. The VQA dataset is built first when missing (`python -m recipes.data.stamps_vqa`); the
re-ranking needs the main job's CMAN in `outputs/demo` (`make demo`). A finished row (its folder holds
`eval_results.json` from the same command and config text) is not trained again; `--fresh` retrains.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TYPES = {
    "accuracy": "overall",
    "accuracy_yes_no": "yes/no",
    "accuracy_number": "number",
    "accuracy_other": "other",
}


@dataclass
class Row:
    key: str
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)


ROWS = [
    Row("early_fusion", "early fusion (single stream)", "recipes/configs/early_fusion_vqa.yaml"),
    Row("cross_attention", "cross-attention (two streams)", "recipes/configs/cross_attention_vqa.yaml"),
    Row(
        "early_fusion_question_only",
        "early fusion, question only (image blanked)",
        "recipes/configs/early_fusion_vqa.yaml",
        ["--question_only", "true"],
    ),
    Row(
        "early_fusion_matching",
        "early fusion, matching head only (no VQA batches)",
        "recipes/configs/early_fusion_vqa.yaml",
        ["--tasks", "matching", "--metric_for_best_model", "loss", "--greater_is_better", "false"],
    ),
]


def train_row(row: Row, args) -> Path:
    """Run the recipe for one row (unless its folder already holds the results of the same command)."""
    output_dir = Path(args.output_dir) / row.key
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes/accelerate_configs/single_process.yaml"),
        "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
        str(REPO / "recipes/train_vqa.py"), str(REPO / row.config),
        "--output_dir", str(output_dir), "--dataset_name", args.dataset, "--pairs_dataset_name", args.pairs_dataset,
        "--rerank_with", args.retriever, "--report_to", "none", *row.overrides, *args.extra,
    ]  # fmt: skip
    record = output_dir / "benchmark_command.json"
    recorded = {"command": command[1:], "config": (REPO / row.config).read_text()}
    previous = json.loads(record.read_text()) if record.exists() else None
    if previous == recorded and (output_dir / "eval_results.json").exists() and not args.fresh:
        print(f"[matching_vqa] {row.key}: done already ({output_dir})")
        return output_dir
    if output_dir.exists() and (args.fresh or previous != recorded):
        shutil.rmtree(output_dir)  # results or checkpoints of another command: never resume from them
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(recorded))  # first, so an interrupted run of the same command resumes
    print(f"[matching_vqa] {row.key}: training ({output_dir})", flush=True)
    started = time.perf_counter()
    with open(output_dir / "benchmark.log", "a") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"[matching_vqa] {row.key}: {time.perf_counter() - started:.0f} s", flush=True)
    return output_dir


def row_result(output_dir: Path, split: str) -> dict:
    results = json.loads((output_dir / "eval_results.json").read_text())["results"][split]
    train = json.loads((output_dir / "train_results.json").read_text())
    return {**results, "train_seconds": train["train_runtime"]}


def markdown(results: dict[str, dict], split: str) -> str:
    answering = {name: result for name, result in results.items() if "vqa" in result}
    first = next(iter(answering.values()))
    vqa_chance = first["vqa"]["chance"]
    lines = [
        f"VQA accuracy on stamps VQA `{split}` ({first['vqa']['num_questions']} questions; standard VQA formula)",
        "",
        "| model | " + " | ".join(TYPES.values()) + " | training |",
        "|---|" + "---:|" * (len(TYPES) + 1),
    ]
    for name, result in answering.items():
        vqa = result["vqa"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{vqa[k]:.3f}" for k in TYPES)
            + f" | {result['train_seconds'] / 60:.1f} min |"
        )
    lines.append(
        "| chance (a uniform training answer of the type) | "
        + " | ".join(f"{vqa_chance[k]:.3f}" for k in TYPES)
        + " | |"
    )
    lines += ["", "Image-text matching and re-ranking CMAN (`outputs/demo`) on the stamps `test` split", ""]
    lines += [
        "| model | matching accuracy (chance 0.5) | own image above another's (chance 0.5) | text→image R@1 before → after | image→text R@1 before → after |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        if "matching" not in result:
            continue
        rerank = result.get("rerank")
        cells = [f"{result['matching']['accuracy']:.3f}", f"{result['matching']['pairwise_accuracy']:.3f}"]
        for direction in ("text_to_image", "image_to_text"):
            if rerank:
                d = rerank[direction]
                cells.append(f"{d['before']['R@1']:.3f} → {d['after']['R@1']:.3f} ({d['gain_R@1']:+.3f})")
            else:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ensure_vqa_dataset(args) -> None:
    if (Path(args.dataset) / "dataset_dict.json").exists():
        return
    from recipes.data.stamps_vqa import build_stamps_vqa_dataset

    print(f"[matching_vqa] building {args.dataset} from {args.pairs_dataset}", flush=True)
    build_stamps_vqa_dataset(args.pairs_dataset, args.dataset)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], choices=[r.key for r in ROWS])
    parser.add_argument("--output_dir", default="outputs/vqa")
    parser.add_argument("--dataset", default="outputs/data/stamps_vqa")
    parser.add_argument("--pairs_dataset", default="outputs/data/stamps")
    parser.add_argument(
        "--retriever", default="outputs/demo", help="the CMAN folder whose results are re-ranked"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--fresh", action="store_true", help="retrain rows that are already done")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (Path(args.retriever) / "config.json").exists():
        raise SystemExit(f"{args.retriever} holds no trained retriever: run `make demo` first.")
    ensure_vqa_dataset(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {row.name: row_result(train_row(row, args), args.split) for row in ROWS if row.key in args.rows}
    table = markdown(results, args.split)
    (output_dir / "matching_vqa.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "matching_vqa.md").write_text(table + "\n")
    print("\n" + table)
    print(f"Wrote {output_dir / 'matching_vqa.md'} and matching_vqa.json")
    return results


if __name__ == "__main__":
    main()
