"""The screenshots in docs/studio, taken with the system's headless Chromium.

    python scripts/screenshots.py studio [--out docs/studio/studio.png]
    python scripts/screenshots.py tensorboard RUN_DIR [--out docs/studio/tensorboard.png]

``studio`` starts the studio on a free loopback port, generates "a red circle" on the shipped LI-DiT and
photographs the page; ``tensorboard`` serves RUN_DIR/logs (a run trained with train.report_to=tensorboard)
on loopback and photographs its time-series dashboard (scalars and sample grids).
"""

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from llmdiff.studio_app import chromium, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def studio(out: Path, prompt: str) -> None:
    port = free_port()
    demo = serve("127.0.0.1", port, block=False)
    try:
        with sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#prompt textarea", prompt)
            page.click("#generate")
            page.wait_for_selector("#attention img", timeout=180_000)
            time.sleep(1)  # let the images finish painting
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        demo.close()


def tensorboard(run: Path, out: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run / "logs"), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            for _ in range(60):  # the server needs a few seconds to read the event files
                try:
                    page.goto(f"http://127.0.0.1:{port}/#timeseries")
                    break
                except Exception:
                    time.sleep(1)
            page.get_by_text("train/loss").first.wait_for(timeout=60_000)
            page.get_by_text("samples").first.wait_for(timeout=60_000)
            time.sleep(8)  # the charts and images load and animate in
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("studio")
    s.add_argument("--out", type=Path, default=Path("docs/studio/studio.png"))
    s.add_argument("--prompt", default="a red circle to the left of a blue square")
    t = sub.add_parser("tensorboard")
    t.add_argument("run", type=Path)
    t.add_argument("--out", type=Path, default=Path("docs/studio/tensorboard.png"))
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    studio(args.out, args.prompt) if args.what == "studio" else tensorboard(args.run, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
