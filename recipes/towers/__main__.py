"""`python -m recipes.towers --output_dir outputs/towers`: convert the three offline pretrained towers."""

from __future__ import annotations

import argparse
import logging
import time

from . import __doc__ as PACKAGE_DOC
from . import ensure_towers

logger = logging.getLogger("recipes.towers")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=PACKAGE_DOC.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", default="outputs/towers", help="Folder that receives the tower folders."
    )
    parser.add_argument("--force", action="store_true", help="Rebuild the folders even when they are cached.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    towers = ensure_towers(args.output_dir, force=args.force)
    for name, folder in towers.items():
        logger.info("%s: %s", name, folder)
    logger.info("Done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
