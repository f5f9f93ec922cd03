"""Print CMAN's parameter table (total / trainable per component), before and after LoRA.

    python -m recipes.model_summary                      # full-size CmanConfig(): RoBERTa-base + AST + ViT-B/16
    python -m recipes.model_summary --towers outputs/towers --audio_window_seconds 5   # the offline towers

Weights are random (nothing is downloaded): parameter counts do not depend on them.
"""

from __future__ import annotations

import argparse
import time

import modeling  # noqa: F401  (registers CMAN with the Auto classes)
from modeling.cman import CmanConfig, CmanModel
from modeling.cman.modeling_cman import PARAMETER_GROUPS
from modeling.common.retrieval import parameter_counts


def summarize(config: CmanConfig, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.2) -> str:
    started = time.perf_counter()
    model = CmanModel(config)
    before = model.parameter_table()
    model.apply_lora(r=lora_r, alpha=lora_alpha, dropout=lora_dropout)  # adapters land in `model` itself
    after = model.parameter_table()
    counts = parameter_counts(model, PARAMETER_GROUPS)
    total = sum(row["total"] for row in counts.values())
    trainable = sum(row["trainable"] for row in counts.values())
    lora = sum(row["lora"] for row in counts.values())
    return (
        f"## Frozen towers, before LoRA\n\n{before}\n\n"
        f"## With LoRA r={lora_r}, alpha={lora_alpha} on the towers' attention query/value projections\n\n{after}\n\n"
        f"Trainable: {trainable:,} of {total:,} parameters ({trainable / total:.2%}); LoRA alone: {lora:,} "
        f"({lora / total:.2%}). Built in {time.perf_counter() - started:.1f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--towers", help="folder written by `python -m recipes.towers` (default: full-size config)"
    )
    parser.add_argument("--audio_window_seconds", type=float, default=None)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--lora_alpha", type=int, default=16)
    args = parser.parse_args()
    if args.towers:
        config = CmanConfig.from_towers(
            text=f"{args.towers}/minilm-l6",
            audio=f"{args.towers}/whisper-tiny-en",
            image=f"{args.towers}/efficientnet-lite0",
            audio_window_seconds=args.audio_window_seconds,
        )
    else:
        config = CmanConfig()
    print(summarize(config, args.lora_r, args.lora_alpha))


if __name__ == "__main__":
    main()
