"""Evaluate a trained matching / VQA folder (early fusion or cross-attention): VQA accuracy overall and per answer
type with chance, image-text matching accuracy, and the re-ranking of a retriever's top-k by the matching head.

    python recipes/evaluate_vqa.py outputs/vqa/early_fusion --dataset outputs/data/stamps_vqa \\
        --pairs_dataset outputs/data/stamps --rerank_with outputs/demo [--question_only] [--output results.json]

What is evaluated follows the folder's heads: VQA needs the answer head and `--dataset`; matching and re-ranking
need the matching head and `--pairs_dataset`. A run saved with `question_only: true` is evaluated with blank
images (say `--question_only` again to be explicit; it is read from the run's `run_config.json` otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.evaluation.matching import format_matching_results  # noqa: E402
from recipes.train_vqa import evaluate_run, load_splits  # noqa: E402
from recipes.training.arguments import MatchingDataArguments  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="A folder saved by recipes/train_vqa.py (or a Hub id).")
    parser.add_argument("--dataset", help="The VQA dataset (save_to_disk folder or Hub name).")
    parser.add_argument("--pairs_dataset", help="Matched description-image pairs (e.g. outputs/data/stamps).")
    parser.add_argument("--train_split", default="train", help="Where chance's answer candidates come from.")
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--question_only", action="store_true", default=None, help="Blank every image.")
    parser.add_argument("--rerank_with", help="A retriever folder whose text<->image top-k to re-rank.")
    parser.add_argument("--top_k", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output", help="Write the results as JSON here.")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor

    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    config = json.loads((Path(args.model) / "config.json").read_text()) if Path(args.model).is_dir() else {}
    answering = "AutoModelForVisualQuestionAnswering" in config.get("auto_map", {}) and bool(
        config.get("id2label") and len(config["id2label"]) > 2
    )
    auto_class = AutoModelForVisualQuestionAnswering if answering else AutoModelForPreTraining
    model = auto_class.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    question_only = args.question_only
    run_config = Path(args.model) / "run_config.json"
    if question_only is None:
        question_only = run_config.is_file() and json.loads(run_config.read_text())["data"].get(
            "question_only", False
        )
    if args.dataset and getattr(model, "vqa_head", None) is None:
        raise SystemExit(f"{args.model} has no answer head: it cannot answer the questions of --dataset.")
    if args.pairs_dataset and getattr(model, "itm_head", None) is None:
        raise SystemExit(f"{args.model} has no matching head: drop --pairs_dataset / --rerank_with.")
    if not args.dataset and not args.pairs_dataset:
        raise SystemExit("Give --dataset (VQA) and/or --pairs_dataset (matching, re-ranking).")
    data_args = MatchingDataArguments(
        tasks=[t for t, given in (("vqa", args.dataset), ("matching", args.pairs_dataset)) if given],
        dataset_name=args.dataset, pairs_dataset_name=args.pairs_dataset, train_split=args.train_split,
        eval_split=None, test_splits=args.splits, question_only=question_only, rerank_with=args.rerank_with,
        rerank_top_k=args.top_k,
    )  # fmt: skip

    vqa = (
        load_splits(args.dataset, data_args, ["question", "answers", "image", "answer_type"])
        if args.dataset
        else None
    )
    pairs = load_splits(args.pairs_dataset, data_args, ["text", "image"]) if args.pairs_dataset else None
    results = evaluate_run(model, processor, data_args, vqa, pairs, args.batch_size)
    print(format_matching_results(results))
    if args.output:
        payload = {"model": args.model, "question_only": question_only, "results": results}
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
