"""Helpers shared by the benchmarks: machine description, medians, timing."""
from __future__ import annotations

import datetime as dt
import os
import platform
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a server's process group (started with start_new_session), SIGKILL after
    ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def checkout(ref: str, dest: Path) -> str:
    """``ref`` checked out in a detached git worktree at ``dest`` (bench_ab, bench_startup:
    two commits side by side, run with this checkout's venv). -> its short hash."""
    rev = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(dest), rev], cwd=ROOT,
                   check=True, capture_output=True)
    return rev


def remove_checkout(dest: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(dest)], cwd=ROOT,
                   capture_output=True)


def pinned_env(store: Path, home: Path) -> dict[str, str]:
    """This environment without its TAILOR_* settings, serving PyTorch fp32 on ``store``:
    two trees measured alike whatever the shell sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(TAILOR_RUNTIME="torch", TAILOR_STORE_PATH=str(store), BENTOML_HOME=str(home),
               BENTOML_DO_NOT_TRACK="true")
    return env


def spread(xs: list[float]) -> str:
    """A table cell: the median and [min-max]."""
    return f"{statistics.median(xs):.3g} [{min(xs):.3g}-{max(xs):.3g}]"


def paired_table(labels: dict[str, str], a_rev: str, a: dict[str, list[float]], b_rev: str,
                 b: dict[str, list[float]]) -> list[str]:
    """Markdown rows for two trees measured in alternating rounds (bench_startup,
    bench_export): each measure's median [min-max] per tree, the ratio of the medians, and
    the median of the rounds' own ratios (A and B of one round ran back to back, under about
    the same load)."""
    out = [f"| measure | A = {a_rev} | B = {b_rev} | B / A (medians) | B / A (paired rounds) |",
           "|---|---|---|---|---|"]
    for key, label in labels.items():
        ma, mb = statistics.median(a[key]), statistics.median(b[key])
        paired = statistics.median(y / x for x, y in zip(a[key], b[key]))
        out.append(f"| {label} | {spread(a[key])} | {spread(b[key])} | {mb / ma:.2f} | {paired:.2f} |")
    return out


def alternating_rounds(trees: list, rounds: int, *steps: Callable[[object, int], None]) -> tuple[float, float]:
    """Run ``steps`` (each ``step(tree, round)``) on two trees for ``rounds`` rounds, the
    order flipping every round and from one step to the next (neither tree always runs first,
    under the load the other left), then ``close()`` every tree. Returns the 1-minute load
    average at the start and at the end (bench_startup, bench_export)."""
    try:
        start = os.getloadavg()[0]
        for n in range(rounds):
            for i, step in enumerate(steps):
                for t in (trees if (n + i) % 2 == 0 else trees[::-1]):
                    step(t, n)
        return start, os.getloadavg()[0]
    finally:
        for t in trees:
            t.close()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import torch

    return (f"{len(os.sched_getaffinity(0))} cores ({cpu}){mem}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {dt.date.today().isoformat()}")


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_section(topic: str, markdown: str) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{topic}.md"
    path.write_text(markdown)
    return path
