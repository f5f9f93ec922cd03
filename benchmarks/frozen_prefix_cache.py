"""What the frozen-prefix cache buys a training step of the main job, against the same step uncached, measured in
the same process (steps interleaved, so both see the same machine load).

    python benchmarks/frozen_prefix_cache.py                # the main job's CMAN (frozen towers), batch 32
    python benchmarks/frozen_prefix_cache.py --use_lora     # the same CMAN with LoRA on the towers' last 4 targets

One step = forward + loss + backward + AdamW on one batch of the stamps' `train` split (real towers from
`outputs/towers`, the model as `recipes/configs/cman_stamps.yaml` builds it, transcripts computed once beforehand).
"Cached" reads the states of each tower's frozen prefix (every layer below its first trainable one) from a
`FrozenPrefixCache` filled by one untimed step; "uncached" runs the whole towers. The script checks that both give
the same loss (the cache must not change what is computed) and stops otherwise.
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "recipes/configs/cman_stamps.yaml"))
    parser.add_argument("--dataset", default=str(REPO / "outputs/data/stamps"))
    parser.add_argument("--towers", default=str(REPO / "outputs/towers"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds (one cached and one uncached step each)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--use_lora", action="store_true", help="LoRA on the towers' last 4 attention targets"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from modeling.common.towers import FrozenPrefixCache, describe_frozen_prefix
    from recipes.data.retrieval import (
        RetrievalCollator,
        add_transcripts,
        load_retrieval_dataset,
        prepare_for_lazy_decoding,
        resolve_columns,
    )
    from recipes.training.arguments import DataArguments, ModelArguments, RetrievalTrainingArguments
    from recipes.training.model import build_model_and_processor, lora_targets
    from recipes.utils.arguments import parse_recipe_arguments

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    towers = ["--text_tower", f"{args.towers}/minilm-l6", "--audio_tower", f"{args.towers}/whisper-tiny-en",
              "--image_tower", f"{args.towers}/efficientnet-lite0"]  # fmt: skip
    model_args, data_args, _ = parse_recipe_arguments(
        (ModelArguments, DataArguments, RetrievalTrainingArguments),
        [args.config, *towers, "--dataset_name", args.dataset, "--output_dir", "/tmp/unused"],
    )
    model, processor = build_model_and_processor(model_args)
    columns = data_args.retrieval_columns()
    split = load_retrieval_dataset(args.dataset)["train"].select(range(args.batch_size))
    modalities = resolve_columns(split, columns, None)
    split = prepare_for_lazy_decoding(split, columns)
    if getattr(model.config, "transcribe_audio", False):
        split = add_transcripts(
            split, model, processor, columns, args.batch_size, False, "transcribing the batch"
        )
    if args.use_lora:
        targets = lora_targets(model, ["text", "audio", "image"], 4)
        model = model.apply_lora(r=8, alpha=16, dropout=0.0, target_modules=targets)
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    batch = RetrievalCollator(processor, columns=columns)([split[i] for i in range(len(split))])
    inputs = {k: v for k, v in batch.items() if k != "group_ids"}
    loss_module = core.retrieval_loss()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.0
    )  # lr 0: same weights

    def step() -> tuple[float, float]:
        torch.manual_seed(
            0
        )  # the same dropout masks in every step, so cached and uncached losses can be compared
        started = time.perf_counter()
        output = model(**inputs)
        embeds = {modality: output[f"{modality}_embeds"] for modality in modalities}
        loss = loss_module(
            embeds, core.inverse_temperature(), getattr(core, "logit_bias", None), batch["group_ids"]
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started, loss.item()

    model.train()
    cache = FrozenPrefixCache()
    for modality, tower in core.towers().items():
        print(f"{modality} tower: {describe_frozen_prefix(tower)}")
    core.enable_frozen_prefix_cache(cache)
    step()  # untimed: fills the cache
    timings: dict[str, list[float]] = {"uncached": [], "cached": []}
    losses: dict[str, set[float]] = {"uncached": set(), "cached": set()}
    for _ in range(args.rounds):
        for name in ("uncached", "cached"):
            core.enable_frozen_prefix_cache(cache if name == "cached" else None)
            seconds, loss = step()
            timings[name].append(seconds)
            losses[name].add(round(loss, 4))
    if losses["cached"] != losses["uncached"]:
        raise SystemExit(f"The cache changed the loss: {losses}")
    best = {name: min(values) for name, values in timings.items()}
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(f"\nOne training step, batch {args.batch_size}, {args.threads} threads, LoRA: {args.use_lora}; "
          f"best / median of {args.rounds}; same loss both ways ({losses['cached'].pop()})")  # fmt: skip
    for name in ("uncached", "cached"):
        print(f"  {name:9} {best[name]:7.2f} s  {median[name]:7.2f} s")
    ratio = best["uncached"] / best["cached"]
    print(
        f"  cached steps are {ratio:.1f}x faster (best), {median['uncached'] / median['cached']:.1f}x (median)"
    )
    return {"best": best, "median": median, "speedup": ratio}


if __name__ == "__main__":
    main()
