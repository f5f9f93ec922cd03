"""`python -m recipes.towers --output_dir outputs/towers [--decoder]`: convert the offline pretrained towers."""

from __future__ import annotations

import argparse
import logging
import time

from . import DECODER_NAMES, TOWER_NAMES, ensure_towers
from . import __doc__ as PACKAGE_DOC

logger = logging.getLogger("recipes.towers")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=PACKAGE_DOC.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", default="outputs/towers", help="Folder that receives the tower folders."
    )
    parser.add_argument("--force", action="store_true", help="Rebuild the folders even when they are cached.")
    parser.add_argument(
        "--decoder",
        action="store_true",
        help="Also convert the generator family's text decoder (SmolLM2-135M-Instruct, ~30 s, 517 MB).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    names = TOWER_NAMES + DECODER_NAMES if args.decoder else TOWER_NAMES
    towers = ensure_towers(args.output_dir, force=args.force, names=names)
    for name, folder in towers.items():
        logger.info("%s: %s", name, folder)
    logger.info("Done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
