"""Screenshot a running retrieval Space with a composed query (text + speech + image), as the README shows it.

    make space &                                   # or: .venv/bin/python spaces/cman-retrieval/app.py
    .venv/bin/python scripts/screenshot_space.py --url http://127.0.0.1:7860 --output docs/retrieval_space.png

The query is one row of the Space's index (its description, its speech and its image) unless --text/--audio/--image
are given. Drives the system Chromium through Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--index", help="the Space's index folder (default: the newest under the cache)")
    parser.add_argument("--row", type=int, default=0, help="the index row whose media make the query")
    parser.add_argument("--text")
    parser.add_argument("--audio")
    parser.add_argument("--image")
    parser.add_argument("--no_audio", action="store_true")
    parser.add_argument("--no_image", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs/retrieval_space.png"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from recipes.training.trainer import default_cache_dir
    from recipes.utils.browser import launch_chromium

    if args.index:
        folder = Path(args.index)
    else:
        folders = sorted(
            (default_cache_dir() / "spaces").glob("*-*/items.json"), key=lambda p: p.stat().st_mtime
        )
        if not folders:
            raise SystemExit("No index found: start the Space first, or pass --index.")
        folder = folders[-1].parent
    item = json.loads((folder / "items.json").read_text())[args.row]
    text = args.text if args.text is not None else item["text"]
    audio = None if args.no_audio else args.audio or str(folder / item["audio"])
    image = None if args.no_image else args.image or str(folder / item["image"])
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(args.url, wait_until="networkidle")
        if text:
            page.locator("#query-text textarea").fill(text)
        if image:
            page.locator("#query-image input[type=file]").set_input_files(image)
        if audio:
            page.locator("#query-audio input[type=file]").set_input_files(audio)
            page.locator("#query-audio audio").first.wait_for(state="attached", timeout=30_000)
        page.locator("#search-button").click()
        page.locator("#search-status").get_by_text("Query:").wait_for(timeout=120_000)
        page.locator("#result-images img").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the gallery's images finish loading
        page.screenshot(path=args.output, full_page=True)
        print(f"{args.output}: {page.locator('#search-status').inner_text()!r}")
        browser.close()


if __name__ == "__main__":
    main()
