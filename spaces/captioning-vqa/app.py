"""Captioning and visual question answering Space: caption an image, answer a question about it, caption a sound.

    python spaces/captioning-vqa/app.py                   # outputs/captioning/gated_xattn, examples from outputs/data/stamps
    python spaces/captioning-vqa/app.py --model your-name/gated-xattn-stamps --port 7861

Settings come from the command line or the environment (a Space sets them as variables): CAPTIONING_MODEL (a saved
folder or Hub id of the generator family), CAPTIONING_DATASET (a `save_to_disk` folder or Hub dataset the examples
are taken from; '' for none), CAPTIONING_SPLIT, CAPTIONING_AUDIO_COLUMN (the sounds of the examples),
CAPTIONING_MAX_NEW_TOKENS.
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

from recipes.serving.captioning import CaptioningService  # noqa: E402
from recipes.serving.captioning_app import build_captioning_demo  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=env("CAPTIONING_MODEL", str(REPO / "outputs/captioning/gated_xattn"))
    )
    stamps = REPO / "outputs/data/stamps"  # the examples' dataset, when recipes/data/stamps.py has built it
    parser.add_argument(
        "--dataset",
        default=env("CAPTIONING_DATASET", str(stamps) if stamps.is_dir() else ""),
        help="where the examples come from (a save_to_disk folder or Hub dataset); '' for no examples",
    )
    parser.add_argument("--split", default=env("CAPTIONING_SPLIT", "test"))
    parser.add_argument(
        "--audio_column",
        default=env("CAPTIONING_AUDIO_COLUMN", "sound_effect"),
        help="the dataset's column of sounds for the examples (rows where it is empty are skipped)",
    )
    parser.add_argument("--max_new_tokens", type=int, default=int(env("CAPTIONING_MAX_NEW_TOKENS", "24")))
    parser.add_argument(
        "--cache_dir", default=env("CAPTIONING_CACHE_DIR"), help="where the examples are kept"
    )
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests run at once (the rest wait in the queue)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    service = CaptioningService(
        args.model,
        args.dataset or None,
        args.split,
        args.cache_dir,
        audio_column=args.audio_column,
        max_new_tokens=args.max_new_tokens,
    )
    demo = build_captioning_demo(service, concurrency_limit=args.concurrency)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        show_error=True,
        allowed_paths=[str(service.examples.folder)] if service.examples.folder else None,
        max_file_size="100mb",  # the uploads' limit (recipes/serving/inputs.py checks it too)
    )


if __name__ == "__main__":
    main()
