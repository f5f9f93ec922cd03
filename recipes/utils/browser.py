"""A headless Chromium for the browser tests and the Space screenshots: the system's `/usr/bin/chromium` (Debian
package, installed by scripts/setup.sh) driven by Playwright; `playwright install` (which downloads a browser) is
never needed. All hosts but localhost resolve to nothing, so a page cannot reach the network."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise FileNotFoundError(
            "Chromium is missing: `bash scripts/setup.sh` installs it (apt-get install chromium)."
        )
    return path


def launch_chromium(playwright):
    """A headless Chromium browser from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
