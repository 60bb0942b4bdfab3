"""Research (issue 20, stop 31): why one text's forward takes longer inside the server than in a
loop in process. Over HTTP at c=1 the served int8-rows graph's ``session.run`` took 12.4 ms
(BBC texts cut to 400 characters) and 4.5 ms (short texts), timed inside the server; in a
loop in process, back to back, the same graph takes ~9 and ~2.8 ms. Between two requests the
server does ~3-5 ms of Python (HTTP, BentoML's middlewares, JSON) while onnxruntime's worker
thread sleeps (spinning is off: DESIGN.md's trap).

This times the served graph (``OnnxEncoder``'s session options, all cores) one text at a time,
with nothing, a 4 ms sleep, or 4 ms of Python work (JSON round trips: what evicts the caches)
between forwards.

    python -m benchmarks.research.forward_gaps [--texts 60]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def churn(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        json.loads(json.dumps({"a": list(range(300)), "b": "x" * 2000}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=60)
    ap.add_argument("--gap-ms", type=float, default=4.0)
    args = ap.parse_args()
    from adapters.encoders import open_encoder
    from benchmarks.bench_peers import text_sets
    from export.runtimes import RuntimeOptions, open_runtime
    from export.runtimes.ort import ONNX_INT8_ROWS

    enc = open_encoder()
    with tempfile.TemporaryDirectory() as d:
        served = open_runtime(ONNX_INT8_ROWS, enc, RuntimeOptions(Path(d), lora=False))
        gaps = {"back to back": lambda: None,
                f"sleep {args.gap_ms:g} ms": lambda: time.sleep(args.gap_ms / 1000),
                f"Python work {args.gap_ms:g} ms": lambda: churn(args.gap_ms)}
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {served.describe()}\n")
        print("| texts | " + " | ".join(gaps) + " |")
        print("|---|" + "---:|" * len(gaps))
        for name, texts in text_sets(args.texts).items():
            feeds = [enc.collate_np(enc.prepare([t])) for t in texts]
            cells = []
            for gap in gaps.values():
                times = []
                for f in feeds:
                    gap()
                    t0 = time.perf_counter()
                    served.session.run(["sentence_embedding"], f)
                    times.append(time.perf_counter() - t0)
                cells.append(f"{1000 * statistics.median(times):.2f} ms")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
