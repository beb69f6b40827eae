"""Screenshots of the built documentation in a real browser (headless Chromium or Chrome).

    python docs/screenshot.py [--html docs/_build/html] [--out docs/_build/screenshots]

writes ``index.png`` (the front page) and ``api.png`` (the API reference) and prints their paths. ``make
docs-screenshot`` builds the site first. The browser is the first found of: ``$SB3_TRPO_BROWSER``, then ``chromium``,
``chromium-browser``, ``google-chrome``, ``google-chrome-stable``, ``chrome``, ``chrome-headless-shell`` on ``PATH``,
then a Chromium that Playwright installed. On Debian or Ubuntu: ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PAGES = {"index": "index.html", "api": "api/index.html"}
BROWSER_NAMES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "chrome-headless-shell",
)
PLAYWRIGHT_GLOBS = (
    "~/.cache/ms-playwright/chromium-*/chrome-linux*/chrome",
    "~/.cache/ms-playwright/chromium_headless_shell-*/chrome-linux*/headless_shell",
)
WINDOW = (1280, 1000)


def find_browser() -> str | None:
    """The path of a Chromium-family browser, or ``None``."""
    override = os.environ.get("SB3_TRPO_BROWSER")
    if override:
        return shutil.which(override) or (
            override if Path(override).is_file() else None
        )
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    for pattern in PLAYWRIGHT_GLOBS:
        found = sorted(glob.glob(os.path.expanduser(pattern)))
        if found:
            return found[-1]
    return None


def screenshot(
    browser: str,
    page: Path,
    out: Path,
    window: tuple[int, int] = WINDOW,
    timeout: float = 120.0,
) -> Path:
    """Render ``page`` (an HTML file) headless and write a PNG of the window's first screen to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sb3-trpo-browser-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # root in containers and CI
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    if not out.is_file():
        raise RuntimeError(
            f"{browser} wrote no screenshot of {page} (exit {result.returncode}):\n{result.stderr[-2000:]}"
        )
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--html", type=Path, default=DOCS / "_build" / "html", help="the built site"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DOCS / "_build" / "screenshots",
        help="folder of the PNG files",
    )
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        sys.exit(
            "no Chromium or Chrome found (set SB3_TRPO_BROWSER, or e.g. `apt-get install chromium`)"
        )
    missing = [
        str(args.html / page)
        for page in PAGES.values()
        if not (args.html / page).is_file()
    ]
    if missing:
        sys.exit(
            f"the site is not built ({', '.join(missing)} missing): run `make docs` first"
        )
    paths = [
        screenshot(browser, args.html / page, args.out / f"{name}.png")
        for name, page in PAGES.items()
    ]
    print(f"browser: {browser}")
    for path in paths:
        print(f"screenshot: {path}")
    return paths


if __name__ == "__main__":
    main()
