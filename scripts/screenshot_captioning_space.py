"""Screenshot a running captioning / VQA Space: an image captioned, or a question about it answered, as the README
shows it.

    make space-captioning &     # or: .venv/bin/python spaces/captioning-vqa/app.py
    .venv/bin/python scripts/screenshot_captioning_space.py --image stamp.png --output docs/captioning_space.png
    .venv/bin/python scripts/screenshot_captioning_space.py --image stamp.png --question "What colour is the background?"

Drives the system Chromium through Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--image", required=True, help="the image to upload")
    parser.add_argument(
        "--question", help="ask this about the image (the second tab) instead of captioning it"
    )
    parser.add_argument("--output", default=str(REPO / "docs/captioning_space.png"))
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    from recipes.utils.browser import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(args.url, wait_until="networkidle")
        if args.question:
            page.get_by_role("tab", name="Ask about an image").click()
            page.locator("#vqa-image input[type=file]").set_input_files(args.image)
            page.locator("#vqa-image img").first.wait_for(timeout=30_000)
            page.locator("#vqa-question textarea").fill(args.question)
            page.locator("#vqa-button").click()
            expect(page.locator("#vqa-answer textarea")).not_to_have_value("", timeout=120_000)
        else:
            page.locator("#caption-image input[type=file]").set_input_files(args.image)
            page.locator("#caption-image img").first.wait_for(timeout=30_000)
            page.locator("#caption-button").click()
            expect(page.locator("#image-caption textarea")).not_to_have_value("", timeout=120_000)
        page.wait_for_timeout(500)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
