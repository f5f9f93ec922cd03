"""Publish a run folder to the Hugging Face Hub: weights (safetensors), config with `auto_map`, the model's code, the
processor, a model card whose `model-index` is read from `eval_results.json`, and the plots.

    python recipes/publish.py outputs/demo your-name/cman-stamps --dry-run   # write and list what would be uploaded
    hf auth login && python recipes/publish.py outputs/demo your-name/cman-stamps

`--dry-run` writes the exact folder to `--staging_dir` (default `outputs/publish/<owner>__<name>`) and prints its
files and size; nothing leaves the machine. A folder without `eval_results.json` is refused unless `--force`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.hub import PublishError, publish_run, stage_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="output_dir of a training run (a saved model folder)")
    parser.add_argument("repo_id", help="the Hub model repository, e.g. your-name/cman-stamps")
    parser.add_argument(
        "--dry-run", action="store_true", help="write the folder that would be uploaded; upload nothing"
    )
    parser.add_argument(
        "--staging_dir", help="where --dry-run writes (default outputs/publish/<owner>__<name>)"
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--include_logs", action="store_true", help="also publish the logs and trainer state")
    parser.add_argument("--force", action="store_true", help="publish a folder that has no eval_results.json")
    parser.add_argument("--baselines", help="an ablation.json whose rows the card shows beside this model")
    parser.add_argument(
        "--dataset_id", help="the Hub id of the training data, for the card (default: its folder name)"
    )
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the one saved by `hf auth login`)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    options = dict(
        include_logs=args.include_logs, force=args.force, baselines=args.baselines, dataset_id=args.dataset_id
    )
    try:
        if args.dry_run:
            staging = args.staging_dir or Path("outputs/publish") / args.repo_id.replace("/", "__")
            staged = stage_run(args.run_dir, args.repo_id, staging, **options)
            print(staged.describe())
            print(
                f"\nDry run: nothing was uploaded. `hf upload {args.repo_id} {staged.folder}` uploads this folder."
            )
        else:
            url = publish_run(args.run_dir, args.repo_id, token=args.token, private=args.private, **options)
            print(f"Published: {url}")
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
