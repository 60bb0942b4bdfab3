"""Research (issue 20): where a served text's time goes over HTTP, at c=1 and c=64.

    .venv/bin/python -m benchmarks.research.profile_http --py-spy /path/to/py-spy [--runtime torch]

Starts Tailor as ``make serve`` does (``bentoml serve``, forced runtime so no first-start
measurement), sends bench_peers' texts one per request with its client, and samples every
process of the server with py-spy (``pip install py-spy`` into any venv: it attaches from
outside, the project does not import it) while each load runs. Each sampled stack is put in
one bucket by the innermost frame it passes through that names a phase (``BUCKETS``), and
the table gives each bucket's share of the server's busy samples, with the texts/s of the
same run. Writes benchmarks/research/results/profile_http.md (the raw collapsed stacks stay
in the run's temporary log folder).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_peers import encode_requests, load, start, stop, tailor_spec, text_sets
from benchmarks.common import machine

OUT = Path(__file__).parent / "results"

# (bucket, substrings of a frame "function (file)"): the LAST frame of a stack (innermost
# first) that matches decides; order here is the tie-break inside one frame
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("GEMM (nn.Linear)", ("forward (torch/nn/modules/linear.py",)),
    ("attention (SDPA)", ("scaled_dot_product_attention", "sdpa_attention_forward")),
    ("LayerNorm / GELU / dropout", ("modules/normalization.py", "modules/activation.py",
                                    "activations.py", "modules/dropout.py")),
    ("embeddings + pooling", ("modules/sparse.py", "mean_pool")),
    ("backbone, rest (Python dispatch, masks)", ("embed_prepared", "_embed_chunk")),
    ("tokenising", ("prepare (adapters/encoders/text.py", "tokenizers")),
    ("heads + answer", ("run_rows", "_answer", "predict_rows")),
    ("batcher (queue, futures)", ("adapters/serving/batcher.py",)),
    ("HTTP, JSON, pydantic, BentoML", ("uvicorn", "starlette", "fastapi", "pydantic", "bentoml",
                                       "_bentoml", "json", "h11", "httptools")),
    ("asyncio loop", ("asyncio",)),
]


def bucket(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for name, keys in BUCKETS:
            if any(k in frame for k in keys):
                return name
    return "other"


def profile(pyspy: str, pid: int, port: int, reqs: list[bytes], concurrency: int,
            raw: Path) -> tuple[float, collections.Counter]:
    spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--subprocesses", "--rate", "200",
                            "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)  # attached
    rate, _ = asyncio.run(load(port, reqs, concurrency))
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    spy.wait(60)
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[bucket(stack)] += int(n)
    return rate, counts


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--py-spy", required=True)
    p.add_argument("--runtime", default="torch")
    p.add_argument("--texts", type=int, default=300)
    args = p.parse_args(argv)
    sets = text_sets(args.texts)
    store = Path(tempfile.mkdtemp(prefix="tailor-profile-"))
    logdir = Path(tempfile.mkdtemp(prefix="tailor-profile-logs-"))
    spec = tailor_spec(f"Tailor, TAILOR_RUNTIME={args.runtime}", store, TAILOR_RUNTIME=args.runtime)
    run = start(spec, logdir)
    OUT.mkdir(exist_ok=True)
    rows = []
    try:
        asyncio.run(load(spec.port, encode_requests(spec, sets["bbc400"][:64]), 16))  # warm
        for sname, texts in sets.items():
            reqs = encode_requests(spec, texts)
            for c in (1, 64):
                raw = logdir / f"profile_http-{sname}-c{c}.txt"
                rate, counts = profile(args.py_spy, run.proc.pid, spec.port, reqs, c, raw)
                rows.append((sname, c, rate, counts))
    finally:
        stop(run)
    names = [n for n, _ in BUCKETS] + ["other"]
    md = ["## Where a served text's time goes over HTTP (`benchmarks/research/profile_http.py`)", "",
          f"Machine: {machine()}; Tailor `bentoml serve`, TAILOR_RUNTIME={args.runtime}; py-spy "
          "samples of every server process at 200 Hz while the load ran; share of busy samples "
          "(idle threads are not sampled). One text per request, bench_peers' client and texts.", "",
          "| bucket | " + " | ".join(f"{s} c={c}" for s, c, _, _ in rows) + " |",
          "|---|" + "---:|" * len(rows)]
    for n in names:
        md.append(f"| {n} | " + " | ".join(
            f"{100 * cnt[n] / max(1, sum(cnt.values())):.1f}%" for *_, cnt in rows) + " |")
    md.append("| texts/s in this run | " + " | ".join(f"{r:.1f}" for _, _, r, _ in rows) + " |")
    text = "\n".join(md) + "\n"
    (OUT / "profile_http.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main())
