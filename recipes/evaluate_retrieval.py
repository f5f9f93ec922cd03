"""Evaluate a retrieval model (any family of the zoo, a saved folder or Hub id) on cross-modal retrieval: all six
directions between text, audio and images, plus composed queries (e.g. text + speech -> image), for one or more
splits of any `datasets` dataset.

    python recipes/evaluate_retrieval.py --model outputs/demo --dataset outputs/data/stamps \\
        --splits test test_animals --composed text+audio:image

Writes `eval_results.json` (R@1/5/10, median and mean rank per direction, with the chance level of each) to
`--output_dir` (default: the model folder) and prints a table. Items whose captions normalise to the same string
are one item: any of them counts as a correct answer. Arguments may also come from a YAML file (first argument).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.retrieval import RetrievalColumns, load_retrieval_dataset  # noqa: E402
from recipes.evaluation.retrieval import (  # noqa: E402
    RetrievalEvalConfig,
    compare_results,
    evaluate_model,
    format_results,
    load_model_and_processor,
)
from recipes.utils.arguments import parse_recipe_arguments  # noqa: E402


@dataclass
class EvaluationArguments:
    model: str = field(metadata={"help": "saved folder or Hub id of a retrieval model (with its processor)"})
    dataset: str = field(metadata={"help": "folder written by save_to_disk, or a Hub dataset name"})
    dataset_config_name: str | None = None
    splits: list[str] = field(default_factory=lambda: ["test"])
    composed: list[str] = field(
        default_factory=lambda: ["text+audio:image"],
        metadata={"help": "composed queries, e.g. text+audio:image"},
    )
    text_column: str = field(default="text", metadata={"help": "'' when the dataset has no text"})
    audio_column: str = field(default="audio", metadata={"help": "'' when the dataset has no audio"})
    image_column: str = field(default="image", metadata={"help": "'' when the dataset has no images"})
    id_column: str = "id"
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "default: the batch size recorded in --check_against, else 32 (captions are padded per batch, so "
            "reproducing figures exactly needs the same batch size)"
        },
    )
    num_workers: int = 0
    chunk_size: int = field(default=4096, metadata={"help": "queries scored per block (bounds memory)"})
    faiss_above: int = field(
        default=200_000, metadata={"help": "search galleries larger than this with FAISS"}
    )
    faiss_index: str = field(default="flat", metadata={"help": "FAISS index: flat (exact), ivf or hnsw"})
    nprobe: int = field(default=32, metadata={"help": "inverted lists an ivf index searches per query"})
    max_items: int | None = None
    skip_bad_rows: bool = field(default=False, metadata={"help": "leave out (and count) undecodable rows"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "read and keep transcripts there (named by dataset and recogniser)"}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "where eval_results.json goes (default: the model folder)"}
    )
    check_against: str | None = field(
        default=None,
        metadata={
            "help": "an eval_results.json to reproduce: exit with an error if any figure differs by more than 1e-4"
        },
    )


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_recipe_arguments((EvaluationArguments,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    expected = json.loads(Path(args.check_against).read_text()) if args.check_against else {}
    if args.batch_size is None:
        args.batch_size = expected.get("batch_size", 32)
    if args.faiss_index not in ("flat", "ivf", "hnsw"):
        raise ValueError(f"--faiss_index must be flat, ivf or hnsw, got {args.faiss_index!r}.")
    config = RetrievalEvalConfig(
        splits=args.splits,
        columns=RetrievalColumns(
            text=args.text_column or None,
            audio=args.audio_column or None,
            image=args.image_column or None,
            id=args.id_column or None,
        ),
        composed=args.composed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        chunk_size=args.chunk_size,
        faiss_above=args.faiss_above,
        faiss_index=args.faiss_index,
        nprobe=args.nprobe,
        max_items=args.max_items,
        skip_bad_rows=args.skip_bad_rows,
        cache_dir=args.cache_dir,
    )
    output_dir = Path(args.output_dir or args.model)
    if args.output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    elif not output_dir.is_dir():
        raise ValueError(f"{output_dir} is not a local folder: pass --output_dir for a Hub model.")

    started = time.perf_counter()
    model, processor = load_model_and_processor(args.model)
    dataset = load_retrieval_dataset(args.dataset, config_name=args.dataset_config_name)
    results = evaluate_model(model, processor, dataset, config)
    payload = {
        "model": args.model,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "results": results,
    }
    (output_dir / "eval_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(format_results(results))
    print(f"\nWrote {output_dir / 'eval_results.json'} in {time.perf_counter() - started:.0f} s.")
    if args.check_against:
        differences = compare_results(expected["results"], results)
        if differences:
            raise SystemExit(f"Results differ from {args.check_against}: " + "; ".join(differences[:10]))
        print(f"Every figure matches {args.check_against} to 1e-4.")
    return payload


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
