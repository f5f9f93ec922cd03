"""Generation with the KV cache against generation without it, on the trained generator (the same prompts, images
and number of new tokens), interleaved in one process; it stops if the two give different tokens.

    python benchmarks/generation_cache.py [--model outputs/captioning/gated_xattn] [--batch_size 16 --new_tokens 24]

Without the cache every step re-reads the whole sequence (the prompt's ~35 tokens plus what was generated) through
the decoder; with it, one token per step. The pixels are read once in both: the resampled latents are carried
between steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="outputs/captioning/gated_xattn")
    parser.add_argument("--dataset", default="outputs/data/stamps")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    images = datasets.load_from_disk(args.dataset)["test"].select(range(args.batch_size))["image"]
    inputs = processor(images=[image.convert("RGB") for image in images])
    settings = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                    pad_token_id=processor.tokenizer.pad_token_id)  # fmt: skip
    times: dict[str, list[float]] = {"cache": [], "no cache": []}
    outputs = {}
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2)  # warm-up
        for _ in range(args.repeats):
            for name, use_cache in (("cache", True), ("no cache", False)):
                started = time.perf_counter()
                outputs[name] = model.generate(**inputs, **settings, use_cache=use_cache)
                times[name].append(time.perf_counter() - started)
    if not torch.equal(outputs["cache"], outputs["no cache"]):
        raise SystemExit("Cached and uncached generation gave different tokens.")
    tokens = args.batch_size * args.new_tokens
    result = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.batch_size} images x {args.new_tokens} new tokens (prompt {inputs['input_ids'].shape[1]} tokens), "
          f"median of {args.repeats}; identical tokens")  # fmt: skip
    for name, seconds in result.items():
        print(f"  {name:>8}: {seconds:.2f} s  ({tokens / seconds:.0f} tokens/s)")
    print(f"  speed-up of the cache: {result['no cache'] / result['cache']:.2f}x")
    return result


if __name__ == "__main__":
    main()
