"""Cross-modal search Space: query an index of the embedded dataset with any mix of text, audio and an image.

    python spaces/cman-retrieval/app.py                       # outputs/demo on outputs/data/stamps (test split)
    python spaces/cman-retrieval/app.py --model your-name/cman-stamps --port 7860

Settings come from the command line or the environment (a Space sets them as variables): CMAN_MODEL (a saved folder
or Hub id), CMAN_DATASET (a `save_to_disk` folder or Hub dataset), CMAN_SPLIT, CMAN_ZERO_SHOT_MODEL (a late-fusion
model for the zero-shot tab; default: outputs/ablation/late_fusion-seed42 when benchmarks/ablation.py has trained it,
else the retrieval model itself), CMAN_ONNX (a folder from recipes/export_onnx.py for
single-modality queries), CMAN_MAX_ITEMS.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The zoo's packages: next to this file in a deployed Space, two levels up in a checkout of the repository.
REPO = HERE if (HERE / "recipes").is_dir() else HERE.parents[1]
if (REPO / "recipes").is_dir() and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes.serving.retrieval import RetrievalService  # noqa: E402
from recipes.serving.retrieval_app import build_retrieval_demo  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=env("CMAN_MODEL", str(REPO / "outputs/demo")))
    parser.add_argument("--dataset", default=env("CMAN_DATASET", str(REPO / "outputs/data/stamps")))
    parser.add_argument("--split", default=env("CMAN_SPLIT", "test"))
    late_fusion = (
        REPO / "outputs/ablation/late_fusion-seed42"
    )  # the ablation's late-fusion model, when trained
    parser.add_argument(
        "--zero_shot_model",
        default=env(
            "CMAN_ZERO_SHOT_MODEL", str(late_fusion) if (late_fusion / "config.json").exists() else None
        ),
        help="a late-fusion model for the zero-shot tab (stock pipelines); '' uses the retrieval model",
    )
    parser.add_argument("--onnx", default=env("CMAN_ONNX"), help="ONNX encoders for single-modality queries")
    parser.add_argument("--max_items", type=int, default=int(env("CMAN_MAX_ITEMS", "0")) or None)
    parser.add_argument("--cache_dir", default=env("CMAN_CACHE_DIR"), help="where the index is kept")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--concurrency", type=int, default=1, help="queries run at once (the rest wait in the queue)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    service = RetrievalService(
        args.model,
        args.dataset,
        args.split,
        args.cache_dir,
        max_items=args.max_items,
        zero_shot_model=args.zero_shot_model or None,
        onnx_dir=args.onnx,
    )
    demo = build_retrieval_demo(service)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=256)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        show_error=True,
        allowed_paths=[str(service.index.folder)],
        max_file_size="100mb",  # the uploads' limit (recipes/serving/inputs.py checks it too)
    )


if __name__ == "__main__":
    main()
