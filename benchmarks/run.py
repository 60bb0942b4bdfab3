"""`make bench`: rerun every benchmark and regenerate benchmarks/RESULTS.md.

    python -m benchmarks.run               # all
    python -m benchmarks.run serving onnx  # some; the others keep their last results
"""
from __future__ import annotations

import importlib
import sys

from benchmarks.common import HERE, RESULTS_DIR

TOPICS = ["serving", "lora", "onnx", "load", "openai"]  # benchmarks/bench_<topic>.py
# The other sections of RESULTS.md are kept as they are: they need hardware CI and these
# machines lack (bench_onnx_gpu.py needs a CUDA GPU), two versions of the code side by side
# (bench_ab.py), a peer in its own environment (bench_peers.py, bench_quality.py), or a run
# of hours on the shared machine (bench_monotone.py); each says how it was run. A rerun
# replaces only the sections of the benchmarks it ran.


def main(argv: list[str]) -> int:
    wanted = argv or TOPICS
    unknown = [t for t in wanted if t not in TOPICS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {TOPICS}", file=sys.stderr)
        return 2
    ran = []
    for topic in wanted:
        try:
            mod = importlib.import_module(f"benchmarks.bench_{topic}")
        except ModuleNotFoundError:
            print(f"[skip] benchmarks/bench_{topic}.py does not exist yet", file=sys.stderr)
            continue
        print(f"[run] {topic}", file=sys.stderr)
        mod.main()  # writes benchmarks/results/<topic>.md
        ran.append(RESULTS_DIR / f"{topic}.md")
    path = HERE / "RESULTS.md"
    path.write_text(replace_sections(path.read_text(), [r.read_text() for r in ran if r.exists()]))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def replace_sections(results: str, sections: list[str]) -> str:
    """RESULTS.md with each of ``sections`` (markdown starting with its ``## `` heading) in
    place of the section of the same heading, or appended when there is none; every other
    section is kept as it is. (It used to be rebuilt from a list of topics, which dropped
    every section missing from the list: eight of eighteen by December 2026.)"""
    lines = results.rstrip("\n").split("\n")
    for section in sections:
        new = section.strip("\n").split("\n")
        heading = new[0]
        if not heading.startswith("## "):
            raise ValueError(f"a section starts with its '## ' heading, not {heading[:60]!r}")
        if heading in lines:
            start = lines.index(heading)
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                       len(lines))
            tail = [""] if end < len(lines) else []
            lines[start:end] = new + tail
        else:
            lines += ["", *new]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
