"""Tailor against a peer embedding server, side by side (issue 12).

    python -m benchmarks.bench_peers                   # all servers, 2 passes
    python -m benchmarks.bench_peers --passes 1 --servers tailor,tailor-torch,infinity-torch --no-probe

Installs the peer (Infinity, ``infinity-emb[server,torch]`` from PyPI) into its own virtual
environment when missing (its pins clash with the project's transformers 5.x), then starts
each server one after the other on the same local all-MiniLM-L6-v2 folder, offline:

- Tailor as the README's ``make serve`` starts it (``bentoml serve service.service:TailorService``),
  with its default runtime (``auto``), and forced to ``TAILOR_RUNTIME=torch`` (fp32) or
  ``onnx`` (fp32 / int8: ``--servers tailor-onnx,tailor-onnx-int8``);
- Infinity, torch engine, its own defaults (``/embeddings``) and ``--dtype bfloat16`` (its
  best setting on CPUs with bf16 units); the "vs Infinity" ratios are taken against the
  faster of the two in each cell (issue 20); its optimum (ONNX) engine is tried on a local
  ONNX folder and reported when it does not come up.

Same texts for every server (600 BBC News texts cut to 400 characters; 600 TREC questions
of fewer than 20 tokens), one text per request, the same client: pre-encoded HTTP/1.1
requests over keep-alive asyncio streams, at concurrency 1 and 64. Each pass starts every
server afresh; the table gives medians over passes, and the spread (min-max) so the noise
of a shared machine is visible. Writes benchmarks/results/peers.md, peers.json and
benchmarks/peers.png.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import HERE, RESULTS_DIR, free_port, machine, stop_group, write_section

ROOT = HERE.parent
PEER_VENV = Path(os.environ.get("TAILOR_PEER_VENV", "/work/venvs/infinity"))
PEER_PACKAGES = ("torch==2.13.0", "infinity-emb[server,torch,optimum]")  # 2.13.0 = the CPU wheel here
CONCURRENCY = (1, 64)
N_TEXTS = 600


# -- texts ----------------------------------------------------------------------------------
def text_sets(n: int = N_TEXTS) -> dict[str, list[str]]:
    from benchmarks.datasets import bbc_news, trec_coarse
    from transformers import AutoTokenizer

    from adapters.encoders.text import default_model_path

    _, test = bbc_news().few_shot(1, seed=9, max_test=n, max_chars=400)
    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    short = [t for t in trec_coarse().texts if len(tok(t)["input_ids"]) < 20]
    import random

    short = random.Random(9).sample(short, n)
    return {"bbc400": [t for t, _ in test], "short": short}


# -- servers --------------------------------------------------------------------------------
@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    route: str
    body: callable  # text -> json-able payload
    parse: callable  # json answer -> list of vectors
    port: int = 0
    note: str = ""
    cwd: Path = ROOT  # where the server runs (a baseline checkout: --baseline)


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen
    log: Path
    startup_s: float = 0.0


def tailor_spec(name: str, store: Path, module: str = "service.service:TailorService",
                root: Path = ROOT, **env: str) -> ServerSpec:
    """``root``: the checkout to serve (another one, e.g. main's, runs with this venv and
    ``PYTHONPATH`` at it: before and after a change, side by side)."""
    bentoml = Path(sys.executable).parent / "bentoml"  # what `make serve` runs: $(BIN)/bentoml
    port = free_port()
    path = {} if root == ROOT else {"PYTHONPATH": str(root)}
    return ServerSpec(
        name, [str(bentoml), "serve", module, "--port", str(port)],
        {"TAILOR_STORE_PATH": str(store), "BENTOML_DO_NOT_TRACK": "True", **path, **env},
        "/readyz", "/v1/embed", lambda t: {"inputs": [t]}, lambda j: j["embeddings"], port,
        note=", ".join(f"{k}={v}" for k, v in env.items()) or "defaults (as `make serve`)",
        cwd=root)


def infinity_spec(name: str, engine: str = "torch", model: Path | None = None,
                  extra: tuple[str, ...] = ()) -> ServerSpec:
    from adapters.encoders.text import default_model_path

    port = free_port()
    model = model or default_model_path()
    return ServerSpec(
        name, [str(PEER_VENV / "bin" / "infinity_emb"), "v2", "--model-id", str(model),
               "--served-model-name", "minilm", "--engine", engine, "--port", str(port),
               "--host", "127.0.0.1", *extra],
        {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
         "DO_NOT_TRACK": "1"},
        "/health", "/embeddings", lambda t: {"model": "minilm", "input": [t]},
        lambda j: [d["embedding"] for d in j["data"]], port,
        note=f"engine {engine}, " + (" ".join(extra) or "its defaults"))


def ensure_peer() -> str:
    """Create the peer's venv and install Infinity into it when missing. -> its version."""
    exe = PEER_VENV / "bin" / "infinity_emb"
    if not exe.exists():
        # venv from inside a venv builds on the base interpreter (sys._base_executable)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_PACKAGES], check=True)
    out = subprocess.run([str(PEER_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('infinity_emb'), m.version('torch'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(spec: ServerSpec, logdir: Path, timeout: float = 900.0) -> Running:
    import httpx

    log = logdir / f"{spec.name.replace(' ', '_').replace('/', '_')}-{spec.port}.log"
    t0 = time.perf_counter()
    proc = subprocess.Popen(spec.argv, cwd=spec.cwd, env={**os.environ, **spec.env},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}:\n"
                               f"{log.read_bytes()[-3000:].decode(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{spec.port}{spec.ready_path}", timeout=2).status_code == 200:
                return Running(spec, proc, log, time.perf_counter() - t0)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(Running(spec, proc, log))
    raise RuntimeError(f"{spec.name} not ready after {timeout:.0f} s; log {log}")


def stop(r: Running) -> None:
    stop_group(r.proc)


# -- the client -------------------------------------------------------------------------------
def encode_requests(spec: ServerSpec, texts: list[str]) -> list[bytes]:
    out = []
    for t in texts:
        data = json.dumps(spec.body(t)).encode()
        out.append(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (spec.route.encode(), spec.port, len(data), data))
    return out


async def load(port: int, requests: list[bytes], concurrency: int,
               by_index: list[float] | None = None) -> tuple[float, list[float]]:
    """All ``requests`` with ``concurrency`` in flight over keep-alive connections (bare
    asyncio streams: the client shares the server's cores, so it must cost little).
    -> (requests/s, latencies in s, in completion order); ``by_index``, when given (a list as
    long as ``requests``), gets each request's latency at its index."""
    queue = list(range(len(requests)))[::-1]
    lat: list[float] = []
    failed: list[int] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                writer.write(requests[i])
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is None:
                    raise RuntimeError("the client needs Content-Length answers")
                await reader.readexactly(length)
                lat.append(time.perf_counter() - t)
                if by_index is not None:
                    by_index[i] = lat[-1]
                if int(head.split(b" ", 2)[1]) != 200:
                    failed.append(int(head.split(b" ", 2)[1]))
        finally:
            writer.close()

    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - t
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed at concurrency {concurrency}: {failed[:5]}")
    return len(requests) / elapsed, lat


def check_answers(spec: ServerSpec, texts: list[str], reference) -> float:
    """Max |1 - cosine| between the server's embeddings and in-process PyTorch fp32."""
    import httpx
    import numpy as np

    worst = 0.0
    for i, t in enumerate(texts):
        r = httpx.post(f"http://127.0.0.1:{spec.port}{spec.route}", json=spec.body(t), timeout=60)
        r.raise_for_status()
        v = np.asarray(spec.parse(r.json())[0], dtype=np.float64)
        ref = reference[i].astype(np.float64)
        worst = max(worst, abs(1 - float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref)))))
    return worst


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@dataclass
class Result:
    server: str
    note: str
    startup_s: list[float] = field(default_factory=list)
    cos_err: float = 0.0
    # (set, concurrency) -> per pass: texts/s, p50 ms, p99 ms
    rate: dict = field(default_factory=dict)
    p50: dict = field(default_factory=dict)
    p99: dict = field(default_factory=dict)
    error: str = ""
    load: list = field(default_factory=list)  # 1-minute load average before each pass


def measure(spec_factory, res: Result, sets: dict[str, list[str]], logdir: Path, reference) -> None:
    spec = spec_factory()
    res.load.append(os.getloadavg()[0])
    run = start(spec, logdir)
    try:
        res.startup_s.append(run.startup_s)
        res.cos_err = max(res.cos_err, check_answers(spec, sets["short"][:8], reference))
        warm = encode_requests(spec, sets["bbc400"][:64])
        asyncio.run(load(spec.port, warm, 16))
        for sname, texts in sets.items():
            reqs = encode_requests(spec, texts)
            for c in CONCURRENCY:
                rate, lat = asyncio.run(load(spec.port, reqs, c))
                key = f"{sname}|c{c}"
                res.rate.setdefault(key, []).append(rate)
                res.p50.setdefault(key, []).append(1000 * pct(lat, 0.5))
                res.p99.setdefault(key, []).append(1000 * pct(lat, 0.99))
    finally:
        stop(run)


def optimum_probe(logdir: Path, store: Path) -> str:
    """Does Infinity's optimum engine load a local ONNX folder offline? -> one line."""
    from adapters.encoders.text import default_model_path

    folder = store / "minilm-onnx"
    if not (folder / "onnx" / "model.onnx").exists():
        shutil.copytree(default_model_path(), folder, dirs_exist_ok=True)
        (folder / "onnx").mkdir(exist_ok=True)
        _export_feature_extraction(folder / "onnx" / "model.onnx")
    spec = infinity_spec("infinity-optimum", "optimum", folder)
    try:
        run = start(spec, logdir, timeout=120)
    except RuntimeError as e:
        log = next(logdir.glob("infinity-optimum-*.log"), None)
        lines = log.read_text(errors="replace").splitlines() if log else str(e).splitlines()
        errs = [ln.strip() for ln in lines if "Error:" in ln and "startup failed" not in ln]
        return f"did not come up: `{(errs or ['(no error line)'])[-1][:300]}`"
    stop(run)
    return "came up on a local ONNX folder (not measured)"


def _export_feature_extraction(path: Path) -> None:
    """The plain encoder as optimum lays it out (ids, mask, type ids -> last_hidden_state)."""
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    from adapters.encoders.text import default_model_path

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = AutoModel.from_pretrained(default_model_path(), local_files_only=True,
                                               attn_implementation="eager").eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    model = Plain()
    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    enc = tok(["a probe", "a longer probe sentence"], padding=True, return_tensors="pt")
    axes = {k: {0: "batch", 1: "sequence"} for k in ("input_ids", "attention_mask", "token_type_ids",
                                                     "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
                          str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=axes)


SERVERS = {
    "tailor": lambda store: (lambda: tailor_spec("Tailor, default (as `make serve`: runtime auto)", store)),
    "tailor-torch": lambda store: (lambda: tailor_spec("Tailor, TAILOR_RUNTIME=torch (fp32, this branch)", store,
                                                       TAILOR_RUNTIME="torch")),
    "tailor-onnx": lambda store: (lambda: tailor_spec("Tailor, onnx fp32", store, TAILOR_RUNTIME="onnx")),
    "tailor-onnx-int8": lambda store: (lambda: tailor_spec("Tailor, onnx int8", store, TAILOR_RUNTIME="onnx",
                                                           TAILOR_ONNX_QUANTIZE="int8")),
    "tailor-int8-rows": lambda store: (lambda: tailor_spec("Tailor, TAILOR_RUNTIME=onnx-int8-rows", store,
                                                           TAILOR_RUNTIME="onnx-int8-rows")),
    "infinity-torch": lambda store: (lambda: infinity_spec("Infinity, torch engine")),
    # the peer at its best here: bf16 on CPUs with bf16 units (issue 20)
    "infinity-bf16": lambda store: (lambda: infinity_spec("Infinity, torch engine, --dtype bfloat16",
                                                          extra=("--dtype", "bfloat16"))),
}
DEFAULT_SERVERS = ("tailor", "tailor-torch", "tailor-onnx-int8", "infinity-torch", "infinity-bf16")


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"comma-separated, of: {', '.join(SERVERS)}")
    p.add_argument("--store", default=None, help="Tailor store (keeps the onnx graph cache between runs)")
    p.add_argument("--texts", type=int, default=N_TEXTS, help="texts per set (smoke runs: fewer)")
    p.add_argument("--no-probe", action="store_true", help="skip the Infinity optimum probe")
    p.add_argument("--baseline", default=None, help="another checkout (e.g. `git worktree add` "
                   "of main): server `tailor-baseline` serves it with defaults, in its own store")
    args = p.parse_args(argv)
    if args.baseline:
        root = Path(args.baseline).resolve()
        base_store = Path(tempfile.mkdtemp(prefix="tailor-peers-baseline-"))
        SERVERS["tailor-baseline"] = lambda store: (lambda: tailor_spec(
            f"Tailor baseline ({root.name}), default", base_store, root=root))
        SERVERS["tailor-baseline-torch"] = lambda store: (lambda: tailor_spec(
            f"Tailor baseline ({root.name}), TAILOR_RUNTIME=torch", base_store, root=root,
            TAILOR_RUNTIME="torch"))
    out_topic = "peers"
    names = args.servers.split(",")
    peer = ensure_peer()
    sets = text_sets(args.texts)
    from adapters import TextEncoder

    reference = TextEncoder().embed(sets["short"][:8]).numpy()
    store = Path(args.store or tempfile.mkdtemp(prefix="tailor-peers-"))
    logdir = Path(tempfile.mkdtemp(prefix="tailor-peers-logs-"))
    results = {n: None for n in names}
    t0 = time.perf_counter()
    for _ in range(args.passes):
        for n in names:
            factory = SERVERS[n](store)
            res = results[n] or Result(factory().name, factory().note)
            results[n] = res
            try:
                measure(factory, res, sets, logdir, reference)
            except Exception as e:  # a server that fails is reported, the others still run
                res.error = f"{type(e).__name__}: {str(e)[-400:]}"
    probe = "not tried" if args.no_probe else optimum_probe(logdir, store)
    md = report(results, sets, peer, probe, args.passes, time.perf_counter() - t0)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{out_topic}.json").write_text(json.dumps(
        {n: r.__dict__ for n, r in results.items()}, indent=1))
    plot(results, HERE / f"{out_topic}.png")
    write_section(out_topic, md.replace("../peers.png", f"../{out_topic}.png"))
    return md


def report(results: dict[str, Result], sets, peer: str, probe: str, passes: int, seconds: float) -> str:
    med = statistics.median
    peers = [r for r in results.values() if r.server.startswith("Infinity") and r.rate]

    def best(k: str, what: str) -> float:  # the faster Infinity setting in this cell
        if what == "rate":
            return max(med(r.rate[k]) for r in peers)
        return min(med(r.p50[k]) for r in peers)
    md = ["## Tailor vs a peer embedding server (issue 12)", "",
          f"Machine: {machine()}; Infinity {peer} (own venv, torch engine: its defaults and "
          "`--dtype bfloat16`; the ratios are against the FASTER Infinity setting in each cell); "
          f"{passes} passes, each server started afresh per pass, one at a time; {seconds:.0f} s "
          "in all. The client (pre-encoded HTTP/1.1 keep-alive asyncio streams) runs on the same "
          "cores. Texts: " + ", ".join(f"`{k}` {len(v)}" for k, v in sets.items()) +
          " (bbc400: BBC News cut to 400 characters, ~90 tokens; short: TREC questions < 20 tokens). "
          "One text per request. Medians over passes, [min-max] in brackets.", ""]
    for sname in sets:
        md += [f"### {sname}", "",
               "| server | c=1 texts/s | c=1 p50 ms | c=1 p99 ms | c=64 texts/s | c=64 p50 ms | c=64 p99 ms | "
               "vs Infinity c=1 | vs Infinity c=64 | c=1 p50 vs Infinity |",
               "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in results.values():
            if not r.rate:
                md.append(f"| {r.server} | failed: {r.error[:200]} | | | | | | | | |")
                continue
            k1, k64 = f"{sname}|c1", f"{sname}|c64"
            cells = []
            for k in (k1, k64):
                rs = r.rate[k]
                cells.append(f"{med(rs):.1f} [{min(rs):.1f}-{max(rs):.1f}] | {med(r.p50[k]):.0f} | {med(r.p99[k]):.0f}")
            if peers:
                ratio = (f"{med(r.rate[k1]) / best(k1, 'rate'):.2f}x | "
                         f"{med(r.rate[k64]) / best(k64, 'rate'):.2f}x | "
                         f"{med(r.p50[k1]) / best(k1, 'p50'):.2f}x")
            else:
                ratio = "- | - | -"
            md.append(f"| {r.server} | {cells[0]} | {cells[1]} | {ratio} |")
        md.append("")
    md += ["| server | settings | start-up s (per pass) | load average before each pass | "
           "max 1-cos vs PyTorch fp32 (8 texts) |", "|---|---|---|---|---:|"]
    for r in results.values():
        md.append(f"| {r.server} | {r.note} | {', '.join(f'{s:.0f}' for s in r.startup_s)} | "
                  f"{', '.join(f'{x:.1f}' for x in r.load)} | {r.cos_err:.1e} |")
    md += ["", f"Infinity's optimum (ONNX) engine on a local ONNX folder, offline: {probe}.", "",
           "![peers](../peers.png)", ""]
    return "\n".join(md)


def plot(results: dict[str, Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {n: r for n, r in results.items() if r.rate}
    keys = [k for k in next(iter(ok.values())).rate] if ok else []
    fig, axes = plt.subplots(1, len(keys) or 1, figsize=(3.2 * max(1, len(keys)), 3.4))
    axes = list(axes) if len(keys) > 1 else [axes]
    for ax, k in zip(axes, keys):
        names = list(ok)
        vals = [statistics.median(ok[n].rate[k]) for n in names]
        ax.bar(range(len(names)), vals, color=["#4c72b0" if "tailor" in n else "#dd8452" for n in names])
        ax.set_xticks(range(len(names)), [n.replace("tailor-", "t-") for n in names], rotation=40, fontsize=7)
        ax.set_title(k.replace("|", ", "), fontsize=9)
        ax.set_ylabel("texts / s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
