"""Where PyTorch bf16 loses batch invariance on this CPU, and what makes it invariant (issue 20).

    python -m benchmarks.research.bf16_invariance      # markdown tables on stdout

The served backbone (adapters/encoders/text.py, ``with_dtype("bfloat16")``), 1 thread, the
fixed sample ``auto`` admits with (export/runtimes/auto.py). Factors separated, each compared
bitwise and by max |diff| of the pooled embedding of the same text:

(a) same text, same padded length, M rows in the batch (the others cut to the same length);
(b) same M, another padded length (alone plus pad tokens; beside a longer batch-mate);
(c) the row's position in a batch of 16;
(d) which op moves first: forward hooks on every leaf module and attention block, the text
    alone vs padded (first module whose output on the text's real tokens differs), and ops
    alone: the bf16 Linear GEMMs at many M, PyTorch's fp32 GEMM (LoRA's low-rank update) at
    small M, SDPA (flash, math) and eager attention by padded length;
then the whole admission check (export/runtimes/invariance.py, bare and with LoRA rows)
under settings that might help: oneDNN off, deterministic algorithms, the SDPA math backend,
eager attention, and attention row by row on real tokens (adapters/encoders/row_attention.py)
with and without LoRA's 4-row padding (adapters/encoders/lora.py ``MIN_GEMM_ROWS``).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import time

import torch
import torch.nn.functional as F


def _diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return "yes" if torch.equal(a, b) else f"no, {float((a.float() - b.float()).abs().max()):.1e}"


class Tracer:
    """Outputs of every leaf module and attention block for one row's real tokens."""

    def __init__(self, model):
        self.rec: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        for name, mod in model.named_modules():
            if name and (not list(mod.children()) or name.endswith("attention.self")):
                mod.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def f(mod, inp, out):
            self.rec[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()
            if name not in self.order:
                self.order.append(name)
        return f

    def run(self, enc, model, rows, row, n, pad=0):
        self.rec.clear()
        batch = enc.collate(rows)
        if pad:
            z = torch.zeros(batch["input_ids"].shape[0], pad, dtype=torch.long)
            batch = {k: torch.cat([v, z], 1) for k, v in batch.items()}
        with torch.inference_mode():
            e = enc.forward(batch, model)[row]
        return e, {k: v[row, :n] for k, v in self.rec.items() if v.dim() == 3 and v.shape[0] > row}

    def first_moved(self, ref, got) -> str:
        return next((k for k in self.order if k in got and k in ref and got[k].shape == ref[k].shape
                     and not torch.equal(got[k], ref[k])), "none")


def factors(enc, texts) -> list[str]:
    model = enc._serving
    tracer = Tracer(model)
    ids = enc.prepare(texts)
    t0 = next(r for r in ids if len(r) == 18)
    n = len(t0)
    ref_e, ref_h = tracer.run(enc, model, [t0], 0, n)
    others = [r[:n - 1] + [r[-1]] for r in ids if len(r) >= 8 and r is not t0]
    others = [(o + [o[-1]] * n)[:n] for o in others]  # every batch-mate exactly n tokens, no padding
    longest = max(ids, key=len)
    out = ["| factor | layout | bitwise equal to alone | first module that moved |", "|---|---|---|---|"]

    def row(factor, layout, rows, r=0, pad=0):
        e, h = tracer.run(enc, model, rows, r, n, pad)
        out.append(f"| {factor} | {layout} | {_diff(e, ref_e)} | {tracer.first_moved(ref_h, h)} |")

    for m in (2, 3, 7, 8, 16, 31, 32, 64):
        row("(a) rows M", f"M={m}, all {n} tokens", [t0] + [others[i % len(others)] for i in range(m - 1)])
    for extra in (1, 8, 14, 15, 16, 32, 64, 128):
        row("(b) padded length", f"alone + {extra} pad tokens ({n + extra})", [t0], pad=extra)
    for extra in (16, 64, 128):
        mate = longest[:n + extra - 1] + [longest[-1]]
        row("(b) padded length", f"M=2 beside a {len(mate)}-token text", [t0, mate])
    for pos in (1, 5, 15):
        rows = [others[i % len(others)] for i in range(16)]
        rows[pos] = t0
        row("(c) position", f"row {pos} of 16, all {n} tokens", rows, pos)
    return out


def ops() -> list[str]:
    torch.manual_seed(0)
    out = ["| op | varied | rows bitwise equal to the smallest shape |", "|---|---|---|"]
    for k, nn_ in ((384, 384), (384, 1536), (1536, 384)):
        lin = torch.nn.Linear(k, nn_).to(torch.bfloat16)
        x = torch.randn(4096, k).to(torch.bfloat16)
        with torch.inference_mode():
            ref = lin(x[:1])
            ok = all(torch.equal(lin(x[:m])[:1], ref) for m in
                     (1, 2, 3, 4, 7, 8, 16, 17, 31, 32, 33, 64, 100, 256, 512, 1000, 2048, 4096))
        out.append(f"| bf16 Linear {k}->{nn_} (oneDNN) | M = 1 ... 4096 | {'yes' if ok else 'no'} |")
    for r in (2, 8):
        a, bt = torch.randn(r, 384), torch.randn(r, 384)
        x = torch.randn(4096, 384)
        f = lambda z: (z @ a.T) @ bt  # noqa: E731  (LoRA's low-rank update, fp32)
        small = [m for m in (1, 2, 3) if not all(torch.equal(f(x[:mm])[:m], f(x[:m])) for mm in (4, 64, 4096))]
        big = all(torch.equal(f(x[:mm])[:4], f(x[:4])) for mm in range(4, 300))
        out.append(f"| fp32 x @ A.T @ (sB).T, rank {r} (LoRA) | M = 1, 2, 3 vs >= 4 | "
                   f"no for M in {small} |")
        out.append(f"| fp32 x @ A.T @ (sB).T, rank {r} (LoRA) | M = 4 ... 299 | {'yes' if big else 'no'} |")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    h, d, n = 12, 32, 18
    base = [torch.randn(1, h, n, d) for _ in range(3)]
    for label, dtype, ctx in (("SDPA default (flash) bf16", torch.bfloat16, contextlib.nullcontext),
                              ("SDPA default (flash) fp32", torch.float32, contextlib.nullcontext),
                              ("SDPA math bf16", torch.bfloat16, lambda: sdpa_kernel(SDPBackend.MATH)),
                              ("eager softmax(QK^T)V bf16", torch.bfloat16, None)):
        def attend(b, length):
            q, k, v = (torch.randn(b, h, length, d) for _ in range(3))
            for t, src in zip((q, k, v), base):
                t[0, :, :n] = src[0]
            mask = torch.ones(b, 1, 1, length, dtype=torch.bool)
            mask[0, :, :, n:] = False
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
            with torch.inference_mode():
                if ctx is None:
                    s = (q @ k.transpose(2, 3)) * d ** -0.5 + torch.where(mask, 0.0, -1e30).to(dtype)
                    o = torch.softmax(s, -1) @ v
                else:
                    with ctx():
                        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return o[0, :, :n]
        ref = attend(1, n)
        moved = [(b, length) for b, length in itertools.product((1, 2, 8, 32), (19, 26, 32, 33, 34, 50, 82, 146))
                 if not torch.equal(attend(b, length), ref)]
        lens = sorted({length for _, length in moved})
        out.append(f"| {label} | batch 1-32 x padded length 19-146 (text: 18 tokens) | "
                   f"{'yes' if not moved else f'no at padded length {lens} (any batch)'} |")
    return out


def settings(base, texts) -> list[str]:
    from adapters.encoders import lora as lora_mod
    from export.lora_graph import parity_adapters
    from export.runtimes import invariance
    from torch.nn.attention import SDPBackend, sdpa_kernel

    loras = parity_adapters(base)

    def bf16(attn=None, rows=False):
        enc = base.with_dtype("bfloat16", row_attention=rows)
        if attn:
            enc._serving.set_attn_implementation(attn)
        return enc

    @contextlib.contextmanager
    def min_rows(k):
        old = lora_mod.MIN_GEMM_ROWS
        lora_mod.MIN_GEMM_ROWS = k
        try:
            yield
        finally:
            lora_mod.MIN_GEMM_ROWS = old

    @contextlib.contextmanager
    def deterministic():
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(False)

    cases = [("bf16, as torch-bf16 serves it (SDPA)", bf16, contextlib.nullcontext),
             ("oneDNN off (torch.backends.mkldnn.flags(enabled=False))", bf16,
              lambda: torch.backends.mkldnn.flags(enabled=False)),
             ("torch.use_deterministic_algorithms(True)", bf16, deterministic),
             ("SDPA math backend (sdpa_kernel(MATH))", bf16, lambda: sdpa_kernel(SDPBackend.MATH)),
             ("eager attention (transformers 'eager')", lambda: bf16("eager"), contextlib.nullcontext),
             ("row attention, LoRA products not padded (MIN_GEMM_ROWS=1)", lambda: bf16(rows=True),
              lambda: min_rows(1)),
             ("**row attention + LoRA padded to 4 rows (torch-bf16-rows)**", lambda: bf16(rows=True),
              contextlib.nullcontext)]
    out = ["| bf16 setting | alone vs mixed, bare | with LoRA rows | admitted (<= 1e-5) | check s |",
           "|---|---:|---:|---|---:|"]
    for label, make, ctx in cases:
        enc = make()
        t = time.perf_counter()
        with ctx():
            bare = invariance.check(enc, texts)
            with_lora = invariance.check(enc, texts, loras)
        ok = "yes" if bare.passed and with_lora.passed else "no"
        out.append(f"| {label} | {bare.max_diff:.1e} | {with_lora.max_diff:.1e} | {ok} | "
                   f"{time.perf_counter() - t:.1f} |")
    return out


def main() -> str:
    from adapters import TextEncoder
    from benchmarks.common import machine
    from export.runtimes.auto import fixed_sample

    torch.set_num_threads(1)
    base = TextEncoder(workers=1)
    texts = fixed_sample()
    load = os.getloadavg()[0]
    md = [f"Machine: {machine()}; 1 thread; load average {load:.1f} at the start.", "",
          "Factors, the backbone in bf16 (SDPA attention, as torch-bf16 serves it), an 18-token text:", ""]
    md += factors(base.with_dtype("bfloat16"), texts)
    md += ["", "Ops alone:", ""] + ops()
    md += ["", "The admission check (export/runtimes/invariance.py) on the fixed sample, per setting:", ""]
    md += settings(base, texts)
    md += ["", f"load average {os.getloadavg()[0]:.1f} at the end"]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    print(main())
