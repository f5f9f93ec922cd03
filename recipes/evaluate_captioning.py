"""Evaluate a saved generator (captioning and open-ended VQA) on test splits, beside its baselines.

    python recipes/evaluate_captioning.py --model outputs/captioning/gated_xattn --baselines \\
        [--retriever outputs/demo] [--decoder outputs/towers/smollm2-135m-instruct] [--matching_vqa outputs/vqa/matching_vqa.json]

For each task of the run (`run_config.json`; or `--tasks`) the model generates on `--split` and is scored: BLEU-4,
METEOR, ROUGE-L, CIDEr-D for captions; VQA accuracy per answer type for answers. With `--baselines`, on the same rows:
the frozen decoder without the media (the pretrained causal LM alone, same prompts), the retrieval baseline for
captioning (the description of the nearest training image or sound under `--retriever`, a CMAN folder), and, for
VQA, the classification heads of the matching families read from `--matching_vqa` (benchmarks/matching_vqa.py).
Writes `captioning_results.json`, `captioning_results.md` and `examples.png` into `--output_dir` (default: the
model folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.captioning import limit_rows, load_task_splits, task_columns  # noqa: E402
from recipes.evaluation.generation import (  # noqa: E402
    evaluate_generation,
    format_generation_results,
    frozen_decoder_baseline,
    retrieval_caption_baseline,
)
from recipes.training.arguments import CaptioningDataArguments  # noqa: E402

logger = logging.getLogger("evaluate_captioning")
MATCHING_ROWS = {  # rows of benchmarks/matching_vqa.py shown beside the generator's open-ended answers
    "early fusion (single stream)": "early fusion, answer classifier",
    "cross-attention (two streams)": "cross-attention, answer classifier",
    "early fusion, question only (image blanked)": "early fusion classifier, question only",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A saved generator folder (or Hub id).")
    parser.add_argument(
        "--tasks", nargs="*", default=None, help="Default: the run's tasks (run_config.json)."
    )
    parser.add_argument("--dataset", default=None, help="Captioning data (default: the run's).")
    parser.add_argument("--vqa_dataset", default=None, help="VQA data (default: the run's).")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--train_split", default="train", help="The retrieval baseline's captions come from it."
    )
    parser.add_argument("--baselines", action="store_true", help="Also run the baselines on the same rows.")
    parser.add_argument("--retriever", default="outputs/demo", help="CMAN folder of the retrieval baseline.")
    parser.add_argument(
        "--decoder", default=None, help="The frozen decoder (default: the run's text_decoder)."
    )
    parser.add_argument("--matching_vqa", default="outputs/vqa/matching_vqa.json",
                        help="Results of benchmarks/matching_vqa.py (classification heads), when present.")  # fmt: skip
    parser.add_argument("--max_test_samples", type=int, default=None)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output_dir", default=None)
    return parser.parse_args(argv)


def run_settings(model: str) -> dict:
    path = Path(model) / "run_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    settings = run_settings(args.model)
    data = CaptioningDataArguments(**{k: v for k, v in settings.get("data", {}).items()
                                      if k in CaptioningDataArguments.__dataclass_fields__})  # fmt: skip
    data.tasks = args.tasks or data.tasks
    data.dataset_name = args.dataset or data.dataset_name
    data.vqa_dataset_name = args.vqa_dataset or data.vqa_dataset_name
    data.train_split, data.eval_split, data.test_splits = args.train_split, None, [args.split]
    splits = load_task_splits(data)
    output_dir = Path(args.output_dir or args.model)
    output_dir.mkdir(parents=True, exist_ok=True)

    model = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    decoder = args.decoder or settings.get("model", {}).get("text_decoder")
    results: dict = {}
    for task in data.tasks:
        test = splits[task][args.split] = limit_rows(splits[task][args.split], args.max_test_samples)
        columns = task_columns(task, data)
        rows = results.setdefault(task, {})
        with torch.inference_mode():
            rows["gated cross-attention generator"] = evaluate_generation(
                model, processor, test, task, columns, args.batch_size, args.max_new_tokens
            )
            if args.baselines:
                if decoder:
                    rows["frozen decoder, no media"] = frozen_decoder_baseline(
                        decoder, processor, test, task, columns, args.batch_size, args.max_new_tokens
                    )
                if task != "vqa" and args.retriever and Path(args.retriever).exists():
                    rows["retrieval: nearest training caption (CMAN)"] = retrieval_caption_baseline(
                        args.retriever, splits[task][args.train_split], test, task, columns, args.batch_size
                    )
        if task == "vqa" and args.baselines and Path(args.matching_vqa).is_file():
            matching = json.loads(Path(args.matching_vqa).read_text())
            for key, name in MATCHING_ROWS.items():
                if key in matching and "vqa" in matching[key]:
                    rows[name] = {k: v for k, v in matching[key]["vqa"].items() if k != "examples"}
            chance = next(
                (m["vqa"].get("chance") for m in matching.values() if "chance" in m.get("vqa", {})), None
            )
            if chance:
                rows["chance (answer prior per type)"] = chance
        logger.info("%s:\n%s", task, format_generation_results({task: rows}))

    payload = {"model": args.model, "split": args.split, "results": results}
    (output_dir / "captioning_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    if output_dir.resolve() == Path(args.model).resolve() and (output_dir / "eval_results.json").exists():
        from model_cards import write_model_card

        write_model_card(output_dir)  # the card shows the baselines beside the model now
    table = format_generation_results(results)
    (output_dir / "captioning_results.md").write_text(table + "\n")
    print(table)
    if "image_captioning" in results:
        from recipes.evaluation.plots import plot_caption_examples

        rows = results["image_captioning"]
        test = splits["image_captioning"][args.split]  # limited above
        baselines = {
            name: r["predictions"]
            for name, r in rows.items()
            if "predictions" in r and name != next(iter(rows))
        }
        plot_caption_examples(
            test, rows["gated cross-attention generator"]["predictions"], output_dir / "examples.png",
            image_column=data.image_column, text_column=data.text_column, baselines=baselines,
        )  # fmt: skip
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
