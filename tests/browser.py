"""A real browser for end-to-end tests: Debian's Chromium driven by Playwright (PyPI).

The binary comes from deploy/install-chromium.sh (root, apt; seconds when present), which
``ensure_installed`` runs when /usr/bin/chromium is missing: where it cannot be installed the
test fails loudly, it is never silently skipped. Playwright's own browser download
(`playwright install`) is never used. The flags keep Chromium off the network it cannot reach
here (background networking, component updates, sync); Playwright gives every launch a fresh,
temporary profile (its --user-data-dir).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "deploy" / "install-chromium.sh"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_installed() -> str:
    """The path of Debian's Chromium (installing it with deploy/install-chromium.sh first)."""
    if not os.access(CHROMIUM, os.X_OK):
        out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"{INSTALL} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                               f"{out.stderr[-2000:]}")
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing after {INSTALL}")
    return CHROMIUM


def launch(playwright):
    """A headless Chromium browser (Playwright's ``Browser``)."""
    return playwright.chromium.launch(executable_path=ensure_installed(), headless=True, args=FLAGS)
