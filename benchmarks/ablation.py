"""The ablation table: CMAN against simpler models with the same towers, data, split and training budget.

    python benchmarks/ablation.py                     # every row, then outputs/ablation/ablation.md (+ .json, .png)
    python benchmarks/ablation.py --rows cascade late_fusion_probe

Each trained row runs the retrieval recipe itself (`accelerate launch recipes/train_retrieval.py <config>`) on the
embedded stamps dataset: the same towers (MiniLM-L6, Whisper tiny.en on 5 s, EfficientNet-Lite0), the same split,
the same transcripts of the frozen recogniser, the same budget (4 epochs of 661 pairs, batch 32, lr 1e-3, AdamW,
cosine schedule), evaluated on `test` (192 stamps). Rows:

- `cman`: CMAN as the main job trains it (recipes/configs/cman_stamps.yaml), seeds 42 and 43;
- `cman_max_margin`: the same CMAN with the seed's loss (max-margin, hardest negatives, after a 1-epoch warm-up over
  all negatives), seed 42;
- `late_fusion`: late fusion, InfoNCE (recipes/configs/late_fusion_stamps.yaml), seeds 42 and 43;
- `late_fusion_sigmoid`: late fusion with SigLIP's sigmoid loss (learned temperature and bias), seed 42;
- `late_fusion_probe`: late fusion with the towers fully frozen, only the projections trained (a linear probe), seed 42;
- `cascade`: the untrained ASR cascade (Whisper's transcript vs the description through frozen MiniLM), text <-> speech.

A finished row (its folder holds `eval_results.json` from the same command and config text) is not trained again, so an interrupted
run continues where it stopped; `--fresh` retrains. Chance levels are computed for each direction.
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

DIRECTIONS = {
    "text_to_audio": "text→speech",
    "audio_to_text": "speech→text",
    "text_to_image": "text→image",
    "image_to_text": "image→text",
    "audio_to_image": "speech→image",
    "image_to_audio": "image→speech",
    "text+audio_to_image": "text+speech→image",
    "audio+image_to_text": "speech+image→text",
}


#: cman_stamps.yaml's model with the seed's loss: max-margin over the hardest in-batch negative (margin 0.2), after
#: one epoch (21 steps) of the max-margin loss over all negatives (VSE++'s warm-up).
CMAN_MAX_MARGIN = {
    "fusion_encoder_config": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "intermediate_size": 1024, "dropout": 0.1, "pooling": "mean"},
    "audio_token_stride": 4, "projection_dim": 512, "temperature": 0.05, "learn_temperature": False,
    "transcribe_audio": True, "late_fusion_residual": True,
    "loss_type": "max_margin", "margin": 0.2, "max_margin_negatives": "hardest",
}  # fmt: skip


@dataclass
class Row:
    key: str
    name: str
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    seeds: tuple[int, ...] = (42,)


ROWS = [
    Row("cman", "CMAN (main job)", "recipes/configs/cman_stamps.yaml", seeds=(42, 43)),
    Row(
        "cman_max_margin",
        "CMAN, max-margin with hardest negatives (the seed's loss)",
        "recipes/configs/cman_stamps.yaml",
        [
            "--model_config",
            json.dumps(CMAN_MAX_MARGIN),
            "--loss_warmup",
            "all_negatives",
            "--loss_warmup_steps",
            "21",
        ],  # fmt: skip
    ),
    Row("late_fusion", "late fusion, InfoNCE", "recipes/configs/late_fusion_stamps.yaml", seeds=(42, 43)),
    Row(
        "late_fusion_sigmoid",
        "late fusion, sigmoid",
        "recipes/configs/late_fusion_stamps.yaml",
        [
            "--model_config",
            json.dumps({"loss_type": "sigmoid", "temperature": 0.1, "transcribe_audio": True}),
        ],
    ),
    Row(
        "late_fusion_probe",
        "late fusion, frozen towers (linear probe)",
        "recipes/configs/late_fusion_stamps.yaml",
        ["--use_lora", "false"],
    ),
    Row("cascade", "ASR cascade, untrained (text↔speech only)"),
]


def train_row(row: Row, seed: int, args) -> Path:
    """Run the recipe for one row and seed (unless its folder already holds the results of the same command)."""
    output_dir = Path(args.output_dir) / f"{row.key}-seed{seed}"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes/accelerate_configs/single_process.yaml"),
        "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
        str(REPO / "recipes/train_retrieval.py"), str(REPO / row.config),
        "--output_dir", str(output_dir), "--seed", str(seed), "--test_splits", args.split,
        "--dataset_name", args.dataset, "--make_plots", "false", "--report_to", "none",
        *[arg.replace("outputs/towers", args.towers) for arg in row.overrides], *args.extra,
    ]  # fmt: skip
    command += ["--text_tower", f"{args.towers}/minilm-l6", "--audio_tower", f"{args.towers}/whisper-tiny-en",
                "--image_tower", f"{args.towers}/efficientnet-lite0"]  # fmt: skip
    record = output_dir / "ablation_command.json"
    # The command and the config file's text: an edited config retrains its rows.
    recorded = {"command": command[1:], "config": (REPO / row.config).read_text()}
    previous = json.loads(record.read_text()) if record.exists() else None
    if previous == recorded and (output_dir / "eval_results.json").exists() and not args.fresh:
        print(f"[ablation] {row.key} seed {seed}: done already ({output_dir})")
        return output_dir
    if output_dir.exists() and (args.fresh or previous != recorded):
        # Results or checkpoints of another command: never resume from them.
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so that an interrupted run of the same command resumes from its last complete checkpoint.
    record.write_text(json.dumps(recorded))
    print(f"[ablation] {row.key} seed {seed}: training ({output_dir})", flush=True)
    started = time.perf_counter()
    with open(output_dir / "ablation.log", "a") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"[ablation] {row.key} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return output_dir


def trained_result(output_dir: Path, split: str) -> dict:
    evaluation = json.loads((output_dir / "eval_results.json").read_text())["results"][split]
    train = json.loads((output_dir / "train_results.json").read_text())
    metrics = {**evaluation["directions"], **evaluation["composed"]}
    return {
        "metrics": {key: metrics[key] for key in DIRECTIONS if key in metrics},
        "trainable_parameters": train["trainable_parameters"],
        "train_seconds": train["train_runtime"],
    }


def cascade_result(args) -> dict:
    """text <-> speech of the untrained ASR cascade, ranked and scored exactly as the recipe's evaluation."""
    import datasets

    from recipes.data.retrieval import caption_group_id
    from recipes.evaluation.asr_cascade import cascade_embeddings
    from recipes.evaluation.retrieval import RetrievalEvalConfig, direction_metrics

    split = datasets.load_from_disk(args.dataset)[args.split]
    texts = list(split["text"])
    waves = [row["audio"]["array"] for row in split]
    started = time.perf_counter()
    text_embeds, speech_embeds, _ = cascade_embeddings(texts, waves, args.towers)
    import torch

    ids = torch.tensor([caption_group_id(t) for t in texts])
    config = RetrievalEvalConfig()
    metrics = {
        "text_to_audio": direction_metrics(text_embeds, speech_embeds, ids, ids, config),
        "audio_to_text": direction_metrics(speech_embeds, text_embeds, ids, ids, config),
    }
    return {
        "metrics": metrics,
        "trainable_parameters": 0,
        "train_seconds": 0.0,
        "seconds": time.perf_counter() - started,
    }


def markdown(results: dict[str, dict], split: str) -> str:
    """Three tables (R@1, R@10, median rank), winners in bold, chance in the last row."""
    keys = [k for k in DIRECTIONS if any(k in r["metrics"] for r in results.values())]
    lines = []
    for metric, label, best in (
        ("R@1", "R@1", max),
        ("R@10", "R@10", max),
        ("median_rank", "median rank", min),
    ):
        winners = {}
        for key in keys:
            values = [r["metrics"][key][metric] for r in results.values() if key in r["metrics"]]
            winners[key] = best(values)
        header = f"| {label} on `{split}` | " + " | ".join(DIRECTIONS[k] for k in keys)
        if metric == "R@1":
            header += " | trainable params | training |"
        else:
            header += " |"
        lines += [header, "|---|" + "---:|" * (len(keys) + (2 if metric == "R@1" else 0))]
        for name, result in results.items():
            cells = []
            for key in keys:
                if key not in result["metrics"]:
                    cells.append("–")
                    continue
                value = result["metrics"][key][metric]
                text = f"{value:.3f}" if metric != "median_rank" else f"{value:g}"
                cells.append(f"**{text}**" if value == winners[key] else text)
            row = f"| {name} | " + " | ".join(cells)
            if metric == "R@1":
                minutes = result["train_seconds"] / 60
                row += (
                    f" | {result['trainable_parameters']:,} | {minutes:.1f} min |"
                    if result["train_seconds"]
                    else " | 0 | – |"
                )
            else:
                row += " |"
            lines.append(row)
        first = next(iter(results.values()))["metrics"]
        chance = [f"{first[k]['chance'][metric]:.3f}" if metric != "median_rank" else f"{first[k]['chance'][metric]:g}"
                  for k in keys]  # fmt: skip
        lines.append("| chance | " + " | ".join(chance) + (" | | |" if metric == "R@1" else " |"))
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(DIRECTIONS)
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for index, (name, result) in enumerate(results.items()):
        values = [result["metrics"][k]["R@10"] if k in result["metrics"] else np.nan for k in keys]
        ax.bar(np.arange(len(keys)) + (index - (len(results) - 1) / 2) * width, values, width, label=name)
    chance = [
        next(iter(results.values()))["metrics"].get(k, {}).get("chance", {}).get("R@10", np.nan) for k in keys
    ]
    ax.scatter(np.arange(len(keys)), chance, marker="_", s=400, color="black", zorder=3, label="chance")
    ax.set_xticks(np.arange(len(keys)), [DIRECTIONS[k] for k in keys], rotation=15)
    ax.set_ylabel("R@10")
    ax.set_ylim(0, 1)
    ax.set_title(f"Ablation on the stamps `{split}` split: R@10 per direction (same towers, data and budget)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", nargs="+", default=[row.key for row in ROWS], choices=[row.key for row in ROWS]
    )
    parser.add_argument("--output_dir", default="outputs/ablation")
    parser.add_argument("--dataset", default="outputs/data/stamps")
    parser.add_argument("--towers", default="outputs/towers")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override every row's seeds")
    parser.add_argument("--fresh", action="store_true", help="retrain rows that are already done")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to every training run"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    for row in ROWS:
        if row.key not in args.rows:
            continue
        if row.config is None:
            print(f"[ablation] {row.key}: transcribing and ranking", flush=True)
            results[row.name] = cascade_result(args)
            continue
        for seed in args.seeds or row.seeds:
            folder = train_row(row, seed, args)
            results[f"{row.name}, seed {seed}"] = trained_result(folder, args.split)
    table = markdown(results, args.split)
    (output_dir / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "ablation.md").write_text(table + "\n")
    plot(results, output_dir / "ablation.png", args.split)
    print("\n" + table)
    print(f"Wrote {output_dir / 'ablation.md'}, ablation.json and ablation.png")
    return results


if __name__ == "__main__":
    main()
