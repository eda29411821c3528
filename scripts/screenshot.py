"""Screenshot pages of a running app in headless Chromium (Debian's /usr/bin/chromium).

    python scripts/screenshot.py http://localhost:8501/zoo docs/zoo.png [--height 2200]
"""

from __future__ import annotations

import argparse

from appserver import CHROMIUM, CHROMIUM_ARGS
from playwright.sync_api import sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--wait-text", default="Models")
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url)
        page.get_by_text(args.wait_text, exact=True).first.wait_for(timeout=120_000)
        page.wait_for_timeout(3000)  # let plotly finish drawing
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
