"""The console (issue 23): time to label 20 suggested texts with the keyboard, and the page's
weight. A real `bentoml serve` running open (no API keys: the console must work that way too)
and Debian's Chromium driven by Playwright (tests/browser.py).

Each round: paste a pool of TREC questions on the labeling page, `suggest` 20, press one
digit per text (its true label) and Enter, until the next version is published. Playwright
presses keys as fast as the page takes them, so "keyboard" is the console's own cost per key
(a person adds their reading time); "suggest" and "publish" are the round trips to the API.

    python -m benchmarks.bench_console [--rounds 5] [--screenshots docs/console]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import machine, write_section
from benchmarks.datasets import trec_coarse

K = 20


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def page_weight(page) -> dict[str, int]:
    """Bytes of every file the console loads (uncompressed, as served)."""
    responses = []
    def keep(r):
        responses.append(r)
    page.on("response", keep)
    page.goto("/ui/")
    page.wait_for_selector("#adapters")
    page.wait_for_load_state("networkidle")
    page.remove_listener("response", keep)
    return {r.url.rsplit("/ui/", 1)[-1] or "index.html": len(r.body())
            for r in responses if "/ui/" in r.url}


def label_round(page, pool: list[str], truth: dict[str, str], labels: list[str]) -> dict[str, float]:
    page.goto("/ui/#/label/questions")
    page.fill("#l-pool", "\n".join(pool))
    page.fill("#l-k", str(K))
    t0 = time.perf_counter()
    page.click("#l-suggest")
    page.locator("#l-items li").nth(K - 1).wait_for()
    t1 = time.perf_counter()
    texts = page.locator("#l-items li .text").all_inner_texts()
    for text in texts:
        page.keyboard.press(str(labels.index(truth[text]) + 1))
    page.locator("#l-status", has_text=f"{K} of {K} done").wait_for()
    t2 = time.perf_counter()
    page.keyboard.press("Enter")
    page.wait_for_selector("#l-published")
    t3 = time.perf_counter()
    return {"suggest": t1 - t0, "keyboard": t2 - t1, "publish": t3 - t2, "total": t3 - t0,
            "texts": texts}


def screenshots(page, out: Path) -> list[Path]:
    """One PNG per page, from the state the benchmark left (docs/console/*.png)."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []

    def shot(name: str) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    page.goto("/ui/#/create")
    page.fill("#c-name", "questions-lora")
    page.select_option("#c-kind", "lora")
    train, _ = trec_coarse().few_shot(4, seed=11)
    rows = io.StringIO()
    csv.writer(rows).writerows([("text", "label"), *((e["text"], e["label"]) for e in train)])
    page.fill("#c-rows", rows.getvalue())
    page.fill("#c-options", '{"epochs": 1, "cv_folds": 2}')
    page.click("#c-submit")
    page.wait_for_selector("#job-decision", timeout=600_000)
    shot("create")
    page.goto("/ui/")
    page.wait_for_selector("#adapters")
    shot("adapters")
    page.goto("/ui/#/adapters/questions")
    page.wait_for_selector("#versions")
    page.fill("#try-texts", "What does NASA stand for?\nWho painted the Mona Lisa?\nHow far is the Moon?")
    page.click("#try-run")
    page.wait_for_selector("#scores")
    shot("adapter")
    page.goto("/ui/#/jobs")
    page.wait_for_selector("#jobs table")
    shot("jobs")
    _, test = trec_coarse().few_shot(4, seed=12, max_test=80)
    page.goto("/ui/#/label/questions")
    page.fill("#l-pool", "\n".join(t for t, _ in test))
    page.fill("#l-k", "8")
    page.click("#l-suggest")
    page.wait_for_selector("#l-items li")
    for key in "21s":
        page.keyboard.press(key)
    shot("label")
    return shots


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from tests.browser import launch
    from tests.conftest import Server

    train, test = trec_coarse().few_shot(4, seed=3, max_test=1200)
    truth = dict(test)
    pool = list(dict.fromkeys(t for t, _ in test))
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "store").start()
        try:
            r = httpx.post(f"{srv.url}/v1/adapters", timeout=120,
                           json={"name": "questions", "kind": "head", "examples": train})
            r.raise_for_status()
            labels = r.json()["labels"]
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(120_000)
                sizes = page_weight(page)
                rounds = []
                for _ in range(args.rounds):
                    rnd = label_round(page, pool[:200], truth, labels)
                    done = set(rnd.pop("texts"))
                    pool = [t for t in pool if t not in done]
                    rounds.append(rnd)
                versions = httpx.get(f"{srv.url}/v1/adapters/questions").json()["versions"]
                shots = screenshots(page, args.screenshots) if args.screenshots else []
                browser.close()
        finally:
            srv.stop()
    load_after = _load()

    files = Path(__file__).resolve().parents[1] / "service" / "console"
    gz = sum(len(gzip.compress((files / n).read_bytes())) for n in sizes if (files / n).exists())
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    lines = [
        "## Console (issue 23): labeling 20 suggested texts with the keyboard", "",
        f"Machine: {machine()}. Load before: `{load_before}`; after: `{load_after}` (a shared "
        "machine). A real `bentoml serve` running open (no API keys), Debian's Chromium "
        "(headless) driven by Playwright; `python -m benchmarks.bench_console`.", "",
        f"Each round: paste a pool of TREC questions, `suggest` {K} (head adapter, 4 examples per "
        f"label to start), press one digit per text and Enter: {K + 1} keystrokes, no mouse. "
        f"Median of {len(rounds)} rounds (versions published: {versions[0]}..{versions[-1]}).", "",
        "| step | median s | min s | max s |", "|---|---|---|---|",
        *(f"| {name} | {med[k]:.2f} | {min(r[k] for r in rounds):.2f} | {max(r[k] for r in rounds):.2f} |"
          for k, name in (("suggest", f"suggest {K} of 200 (click -> {K} shown)"),
                          ("keyboard", f"label {K} with the keyboard ({K} digits, all shown as done)"),
                          ("publish", "Enter -> next version published, before/after shown"),
                          ("total", "the whole round"))),
        "",
        f"Per key: {med['keyboard'] / K * 1000:.0f} ms (the console redraws the list on every key). "
        f"A person labels at the speed they read; the console adds {med['keyboard']:.1f} s per {K} texts. "
        "`suggest` and publish are the API's own time (embedding the pool, training and "
        "cross-validating the next version on 2 loaded cores), not the page's.",
        "",
        f"Page weight (everything the console loads, as served, no compression): "
        f"**{sum(sizes.values()) / 1024:.1f} KB** in {len(sizes)} files; {gz / 1024:.1f} KB if gzipped. "
        "No framework, no third-party file: " + ", ".join(f"{n} {b / 1024:.1f} KB" for n, b in sorted(sizes.items())) + ".",
        "",
    ]
    path = write_section("console", "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}" + (f"; screenshots: {', '.join(map(str, shots))}" if shots else ""))


if __name__ == "__main__":
    main()
