"""``TAILOR_RUNTIME=auto``: at start-up, serve on the fastest runtime that keeps accuracy.

Candidates: every registered runtime (base.py) that is a candidate and can serve the backbone
on this machine, in registration order, each an ``Encoder`` built from the loaded PyTorch
encoder. Today:

    onnx-fp32   onnxruntime fp32, fused graph (cached)
    torch-bf16  PyTorch on a bf16 copy of the weights, only where the CPU has bf16 matrix
                units (AMX / avx512_bf16; elsewhere bf16 is emulated, slower than fp32)
    torch-fp32  PyTorch eager: the reference (``REFERENCE``), always qualifies

Not candidates: onnx-int8 (dynamic activation scales per run are not batch-invariant by
construction, ort.py) and torch-bf16-rows (pytorch.py says why); both serve when forced.

The sample is text: a backbone with no candidate (an image backbone today) is served on the
reference without measuring.

The gate (``GATE``), on a FIXED sample shipped with the code (export/sample.py's parity
sample plus long texts, so padding and truncation are exercised): every row's cosine to
PyTorch fp32 >= 0.995 and the mean of (1 - cosine) <= 1e-3. Chosen from the research
(benchmarks/results/research_int8.md, research_bf16.md): backbones whose mean drift was
<= 1e-3 kept >= 99% top-1 agreement with fp32 on held-out texts for every head and LoRA
adapter measured (bf16 5e-5, weight-only int8 3e-4), while dynamic int8 (5.6e-3 to 9.2e-3,
min cosine 0.96) fell to 95-98%. A candidate that fails the gate, or fails to build (e.g.
its graph's own parity check), is skipped and the reason logged.

Batch invariance (``admit``, export/runtimes/invariance.py), after the gate and the speed
measurement, for the candidate that would win on speed only (then the next fastest if it
fails; PyTorch fp32 when it is served): the sample embedded one text per call must equal
the same rows inside mixed, differently padded batches within 1e-5, bare and with LoRA
adapters of several ranks mixed per row, on the encoder as it would be served (an onnx
candidate with its LoRA-routed graph): the same text to the same adapter gets the same
answer whatever shares its batch. Checking every candidate in full (issue 20) made a first
start 4x longer; a candidate that could not be served needs no check, and a failing check
stops at its first counter-example. bf16 (roundings follow the batch's shape)
and dynamic int8 (activation scales per run) fail it on this machine and are not served by
``auto`` (issue 20: on bf16, 94 of 200 concurrent answers moved by more than 1e-4); they
stay available when forced (``TAILOR_RUNTIME=torch-bf16``, ``onnx`` with int8).

Speed: rows/s at batch 32 (best of 2) on the sample decides, against PyTorch fp32 itself
(measured the same way: a candidate that passes the gate but is slower than fp32 is not
served), except between runtimes within ``TIE`` (10%) of the best batch-32 rate: there the
faster at batch 1 (median of 8 single texts) ranks first (``ranked``; rule 4, 2026-12-07).
Until 2026-12-01 the score was the harmonic mean of the two, and on a quiet machine it
picked onnx fp32 (batch 1: 315 rows/s against bf16's 111; batch 32: 188 against 692), which
then served 0.38x of bf16's texts/s at c=64 and 0.93x at c=1 on BBC texts (benchmarks/
RESULTS.md, issue 12, "quiet rerun"): throughput under load is what the batch-32 rate
predicts. But ranked by batch 32 alone, onnx fp32 and PyTorch fp32 tie on this machine
(147-150 against 136-150 rows/s over four first starts), and the coin flip decided whether
one short text took 4.7 ms (onnx) or 11.4 ms (PyTorch) over HTTP; the tie now goes to batch 1.

The service measures in a CHILD process (``isolate=True``; ``python -m export.runtimes.auto``)
and then builds only the chosen runtime: measuring in the serving process left the rejected
candidates' onnxruntime sessions and bf16 copy in its heap (worker RSS 1.15 GB after a first
start against 0.64 GB after a cached one, issue 12's notes; glibc does not hand the memory
back). If the child fails, the measurement runs in-process, as before.

The decision is cached (``<cache dir>/choice-<key>.json``, key: backbone sha256, CPU model
and flags, torch and onnxruntime versions, threads, the gate, the rule's version): a
restart, or a second replica on the same machine type and volume, skips the measurement and
cannot flip runtimes under heads fitted on the first one's embeddings. Delete the file to
measure again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from adapters.child import receive, spawn
from adapters.encoders import Encoder, TorchEncoder

from ..sample import SAMPLE_TEXTS
from . import invariance
from .base import (REFERENCE, RuntimeOptions, auto_candidates, get_runtime, open_runtime,
                   selected_by)

log = logging.getLogger("tailor")


@dataclass(frozen=True)
class Gate:
    min_cosine: float = 0.995  # every row of the sample
    max_mean_drift: float = 1e-3  # mean of (1 - cosine) over the sample


GATE = Gate()

LONG_SAMPLE: tuple[str, ...] = (
    "The central bank left interest rates unchanged on Thursday, saying inflation had eased "
    "but the labour market remained tight, and signalled that cuts could come later in the "
    "year if price growth kept slowing. Markets rose on the news while the currency fell.",
    "Thank you for your order. Your parcel has been dispatched and should arrive within three "
    "to five working days. If anything is missing or damaged, reply to this email with a photo "
    "and your order number and we will send a replacement or refund you in full.",
    "The match was delayed by rain for almost an hour, but once play resumed the home side "
    "dominated, scoring twice before half time and holding on despite a late red card.",
    "To reset the router, hold the button on the back for ten seconds until the light blinks "
    "orange, then wait two minutes and connect again with the password printed underneath.",
)


def fixed_sample() -> list[str]:
    return list(SAMPLE_TEXTS) + list(LONG_SAMPLE)


@dataclass
class Candidate:
    name: str
    build: Callable[[], Any]  # -> an Encoder (adapters.encoders.Encoder)
    # -> the encoder as it would be served (e.g. with its LoRA-routed graph), built only when
    # ``build``'s passed the accuracy gate: its batch invariance is checked. None: ``build``'s
    serving: Callable[[], Any] | None = None


@dataclass
class Trial:
    name: str
    min_cosine: float = 0.0
    mean_drift: float = 1.0
    rows_per_s_b1: float = 0.0
    rows_per_s_b32: float = 0.0
    passed: bool = False
    error: str = ""
    # export/runtimes/invariance.py: alone vs mixed batches (-1: not checked, as a candidate
    # that could not be served: slower than fp32 or than the one served)
    batch_max_diff: float = -1.0

    def why_not(self) -> str:
        if self.error:
            return f"{self.name} ({self.error})"
        return f"{self.name} (mean drift {self.mean_drift:.1e}, min cosine {self.min_cosine:.4f})"


@dataclass
class Choice:
    runtime: str
    reason: str
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False

    def line(self) -> str:
        how = "cached decision" if self.cached else f"measured in {self.seconds:.1f} s"
        return f"runtime auto chose {self.runtime} ({how}): {self.reason}"


def _drift(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    return float(cos.min()), float(np.mean(1 - cos))


def _rate(embed: Callable[[list[str]], Any], texts: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        embed(texts)
        best = min(best, time.perf_counter() - t)
    return len(texts) / max(best, 1e-9)


def gated(name: str, encoder: Any, ref: np.ndarray, sample: list[str], gate: Gate) -> Trial:
    """The accuracy gate: ``encoder``'s embeddings of ``sample`` against the reference's
    ``ref``."""
    t = Trial(name)
    t.min_cosine, t.mean_drift = _drift(ref, np.asarray(encoder.embed(sample), dtype=np.float32))
    t.passed = t.min_cosine >= gate.min_cosine and t.mean_drift <= gate.max_mean_drift
    return t


def measure(name: str, encoder: Any, ref: np.ndarray, sample: list[str], gate: Gate) -> Trial:
    """The gate, then (if it holds) the speed of ``encoder`` on ``sample``. Batch invariance
    is checked afterwards (``admit``), only for the candidates that could win on speed."""
    t = gated(name, encoder, ref, sample, gate)
    if t.passed:
        t.rows_per_s_b1 = statistics.median(_rate(encoder.embed, [s], 1) for s in sample[:8])
        t.rows_per_s_b32 = _rate(encoder.embed, (sample * 2)[:32], 2)
    return t


def admit(trial: Trial, encoder: Any, sample: list[str], loras: Sequence[Any]) -> Trial:
    """The batch-invariance part of admission (export/runtimes/invariance.py): the sample alone vs in
    mixed, differently padded batches, bare and with LoRA adapters mixed per row. Stops at
    the first row that moves (a rejection needs one counter-example, not the largest)."""
    report = invariance.check(encoder, sample, stop_at_first=True)
    if report.passed and loras:  # candidates run text backbones (the sample is text)
        with_lora = invariance.check(encoder, sample, loras, stop_at_first=True)
        report = max(report, with_lora, key=lambda r: r.max_diff)
    trial.batch_max_diff = report.max_diff
    if not report.passed:
        trial.passed, trial.error = False, report.why_not()
    return trial


def _invariance_loras(reference: Any) -> list[Any]:
    """Non-identity LoRA adapters of several ranks and targets, and a bare row."""
    from ..lora_graph import parity_adapters

    return parity_adapters(reference) if isinstance(reference, TorchEncoder) else []


# Within this fraction of the best batch-32 rate, runtimes are tied and the one faster at
# batch 1 ranks first (``ranked``). Four first starts here measured PyTorch fp32 at 136-150
# rows/s at batch 32 and onnx fp32 at 147-150 (the spread of one runtime: 10%), while at
# batch 1 onnx answered 305-332 rows/s against 116-120: served, one short text took 4.7 ms
# on onnx fp32 against 11.4 ms on PyTorch fp32 (c=1 p50 over HTTP), and which of the two a
# first start served was a coin flip (2 of 4 each). Only a tie: bf16's 3.7x at batch 32
# (issue 12) is far outside it, so the rule-1 mistake (a harmonic mean that served onnx for
# its batch-1 speed at 0.38x bf16's throughput) cannot come back.
TIE = 0.10


def ranked(trials: Sequence[Trial]) -> list[Trial]:
    """The serving order: faster at batch 32 first, except that runtimes within ``TIE`` of
    the fastest not yet placed are tied, and among them the faster at batch 1 comes first
    (here: bf16 alone, then onnx fp32 before PyTorch fp32)."""
    left, order = sorted(trials, key=lambda t: t.rows_per_s_b32, reverse=True), []
    while left:
        tied = [t for t in left if t.rows_per_s_b32 >= (1 - TIE) * left[0].rows_per_s_b32]
        order += sorted(tied, key=lambda t: t.rows_per_s_b1, reverse=True)
        left = left[len(tied):]
    return order


def _admit_first(order: list[Trial], found: dict[str, tuple[Candidate, Any]], sample: list[str],
                 loras: Sequence[Any]) -> tuple[Trial, Any] | None:
    """Batch invariance of the candidates in serving ``order`` until one holds: that one is
    served. None when the reference (PyTorch fp32, not in ``found``) comes first: the ones
    after it are never checked, since they could not be chosen (a first start checked every
    candidate until issue 20b: 61 s instead of ~15 s). A candidate is checked as it would be
    served (``serving``, e.g. with its LoRA-routed graph)."""
    for trial in order:
        if trial.name not in found:
            return None
        c, enc = found[trial.name]
        try:
            served = c.serving() if c.serving is not None else enc
            admit(trial, served, sample, loras)
        except Exception as e:  # noqa: BLE001 - a candidate that cannot run is not chosen
            trial.passed, trial.error = False, f"{type(e).__name__}: {str(e)[:200]}"
        if trial.passed:
            return trial, served
        log.info("runtime auto: candidate skipped: %s", trial.why_not())
    return None


def _rates(trials: Sequence[Trial]) -> str:
    return ", ".join(f"{t.name} {t.rows_per_s_b32:.0f} / {t.rows_per_s_b1:.0f}" for t in trials)


def choose(reference: Any, candidates: Sequence[Candidate], gate: Gate = GATE,
           sample: Sequence[str] | None = None) -> tuple[Choice, Any]:
    """The first in speed (``ranked``) of the candidates that pass ``gate`` against
    ``reference`` (fp32) and the batch-invariance check, and the reference itself
    (``REFERENCE``, measured the same way), and its encoder. Accuracy and speed are measured
    for every candidate; batch invariance only for the one that would win, then the next if
    it fails (``_admit_first``)."""
    t0 = time.perf_counter()
    sample = list(sample or fixed_sample())
    ref = np.asarray(reference.embed(sample), dtype=np.float32)
    trials: list[Trial] = []
    accurate: list[tuple[Trial, Candidate, Any]] = []
    for c in candidates:
        try:
            enc = c.build()
            trial = measure(c.name, enc, ref, sample, gate)
        except Exception as e:  # noqa: BLE001 - a candidate that cannot run is not chosen
            trial = Trial(c.name, error=f"{type(e).__name__}: {str(e)[:200]}")
        if trial.passed:
            accurate.append((trial, c, enc))
        else:
            log.info("runtime auto: candidate skipped: %s", trial.why_not())
        trials.append(trial)
    if not accurate:
        choice = Choice(REFERENCE, "no candidate kept accuracy on the fixed sample" +
                        _rejected(trials), trials)
        choice.seconds = time.perf_counter() - t0
        return choice, reference
    fp32 = measure(REFERENCE, reference, ref, sample, gate)
    trials.append(fp32)  # the bar to beat
    loras = _invariance_loras(reference)
    order = ranked([t for t, _, _ in accurate] + [fp32])
    rates = (f"rows/s at batch 32 / batch 1: {_rates(order)}; within {TIE:.0%} at batch 32 the "
             "faster at batch 1 ranks first")
    won = _admit_first(order, {t.name: (c, enc) for t, c, enc in accurate}, sample, loras)
    if won is None:
        # the reference is served; its invariance is checked and logged
        if not admit(fp32, reference, sample, loras).passed:
            log.warning("runtime auto: PyTorch fp32 itself is %s", fp32.error)
            fp32.passed, fp32.error = True, ""
        why = f"no candidate that keeps accuracy and batch invariance ranks above PyTorch fp32 ({rates})"
        choice, encoder = Choice(REFERENCE, why + _rejected(trials), trials), reference
    else:
        best, encoder = won
        why = (f"first in speed that keeps accuracy (mean drift {best.mean_drift:.1e} <= "
               f"{gate.max_mean_drift:g}, min cosine {best.min_cosine:.4f} >= "
               f"{gate.min_cosine:g}) and batch invariance (alone vs mixed batches "
               f"{best.batch_max_diff:.1e} <= {invariance.TOLERANCE:g}); {rates}")
        choice = Choice(best.name, why + _rejected(trials), trials)
    choice.seconds = time.perf_counter() - t0
    return choice, encoder


def _rejected(trials: list[Trial]) -> str:
    rejected = [t.why_not() for t in trials if not t.passed]
    return f"; rejected: {', '.join(rejected)}" if rejected else ""


# The decision rule's version, part of the cache key: a decision cached under an older rule
# (4: ties at batch 32 go to the faster at batch 1, ``TIE``; 3: + batch invariance; 2: the batch-32 rate against fp32; 1: the harmonic mean without
# fp32) is measured again: a store that cached torch-bf16 under rule 2 drops it.
# (torch-bf16-rows is not a candidate, pytorch.py says why.)
RULE = 4


def cache_key(sha256: str, threads: int, gate: Gate = GATE) -> str:
    import onnxruntime
    import torch

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln for ln in lines if ln.startswith("model name")), "")
        cpu += next((ln for ln in lines if ln.startswith("flags")), "")
    except OSError:
        cpu = platform.processor()
    return hashlib.sha256("|".join([sha256, cpu, torch.__version__, onnxruntime.__version__,
                                    str(threads), repr(gate), f"rule{RULE}"]).encode()).hexdigest()[:16]


def cached(options: RuntimeOptions, what: str, encoder: Any, gate: Gate) -> Path:
    """Where a measurement of ``what`` for ``encoder``'s backbone on this machine is cached."""
    key = cache_key(encoder.identity.sha256, options.threads, gate)
    return options.cache_dir / f"{what}-{key}.json"


def candidates_for(encoder: TorchEncoder, options: RuntimeOptions) -> list[Candidate]:
    """This machine's candidates for ``encoder`` (the registry's), built lazily. Accuracy and
    speed are measured without what LoRA rows need; a candidate that kept accuracy is opened
    as it would be served (``serving``, e.g. with its LoRA-routed graph) for its
    batch-invariance check, and the chosen one is opened again (``encoder_for``)."""
    measuring, serving = replace(options, lora=False), replace(options, lora=True)
    return [Candidate(r.name, lambda r=r: r.open(encoder, measuring),
                      lambda r=r: r.open(encoder, serving)) for r in auto_candidates(encoder)]


def encoder_for(name: str, encoder: TorchEncoder, options: RuntimeOptions) -> Encoder:
    """The serving encoder of a decision."""
    return open_runtime(get_runtime(name), encoder, options)


def _put(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON at ``path``, atomically (replicas on one volume read these files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _write(path: Path, choice: Choice, gate: Gate) -> None:
    _put(path, {"runtime": choice.runtime, "reason": choice.reason,
                "trials": [asdict(t) for t in choice.trials], "seconds": choice.seconds,
                "gate": asdict(gate)})


def _read(path: Path) -> Choice:
    data = json.loads(path.read_text())
    return Choice(data["runtime"], data["reason"], [Trial(**t) for t in data["trials"]],
                  data["seconds"], cached=True)


CHILD_TIMEOUT_S = 900.0


def _measure_in_child(encoder: TorchEncoder, options: RuntimeOptions, path: Path,
                      gate: Gate) -> Choice | None:
    """Run the measurement in ``python -m export.runtimes.auto`` (same backbone folder,
    threads and batch shape); it writes the decision to ``path``. None when it failed."""
    import torch

    spec = {"backbone_path": str(encoder.model_dir), "name": encoder.identity.name,
            "max_batch_rows": encoder.max_batch_rows, "workers": encoder.workers,
            "torch_threads": torch.get_num_threads(), "cache_dir": str(options.cache_dir),
            "threads": options.threads, "providers": list(options.providers),
            "cuda_tf32": options.cuda_tf32, "gate": asdict(gate)}
    t0 = time.perf_counter()
    try:
        with spawn("export.runtimes.auto", spec) as child:
            code, stderr = child.wait(CHILD_TIMEOUT_S), child.stderr()
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("runtime auto: measuring in a child process failed (%s); measuring here", e)
        return None
    if code != 0 or not path.exists():
        log.warning("runtime auto: the measuring child exited %s (%s); measuring here",
                    code, stderr.strip()[-400:])
        return None
    for line in stderr.splitlines():  # its skipped candidates, in the service's log
        if "runtime auto: candidate" in line:
            log.info(line[line.index("runtime auto: candidate"):])
    choice = _read(path)
    choice.cached = False
    choice.seconds = time.perf_counter() - t0
    return choice


def auto(encoder: TorchEncoder, options: RuntimeOptions, *, gate: Gate = GATE,
         isolate: bool = False) -> tuple[Encoder, Choice]:
    """The serving encoder for ``TAILOR_RUNTIME=auto`` and the decision, logged in one line.
    Reads the cached decision when there is one; measures and caches it otherwise. A backbone
    no candidate runs (an image backbone today) is served on the reference.
    ``isolate``: measure in a child process (what the service does; see the module docstring)."""
    if not auto_candidates(encoder):
        choice = Choice(REFERENCE, f"{encoder.modality} backbone: no faster candidate runs it "
                        "so far")
        log.info(choice.line())
        return encoder, choice
    path = cached(options, "choice", encoder, gate)
    choice = None
    if path.exists():
        try:
            choice = _read(path)
            served = encoder_for(choice.runtime, encoder, options)
        except Exception as e:  # noqa: BLE001 - a stale or broken cache: measure again
            log.warning("runtime auto: cached decision %s unusable (%s); measuring again", path, e)
            choice = None
    if choice is None and isolate:
        choice = _measure_in_child(encoder, options, path, gate)
        if choice is not None:
            served = encoder_for(choice.runtime, encoder, options)
    if choice is None:
        # the chosen candidate's encoder as served (with what LoRA rows need): the one whose
        # batch invariance was checked
        choice, served = choose(encoder, candidates_for(encoder, options), gate)
        _write(path, choice, gate)
    log.info(choice.line())
    return served, choice


def forced_admission(name: str, served: Any, reference: TorchEncoder, options: RuntimeOptions,
                     gate: Gate = GATE, revision: str = "") -> Trial | None:
    """What ``auto``'s admission says of a runtime the settings force, logged at start-up: a
    WARNING when it would not be admitted (embeddings drift from PyTorch fp32 past ``gate``,
    or a text's answer moves with what shares its batch), one INFO line when it would. The
    operator chose it, so it is served either way; until 2026-12-07 a forced runtime was
    served unchecked, and finding out that bf16 moved answers by 1e-3 with the traffic took
    a benchmark (issue 20). Stops at the first reason, like ``admit``.

    Only runtimes other than the reference, on the text sample (other backbones: None). The
    report is cached beside ``auto``'s decisions (``forced-<runtime>-<key>.json``, the same
    key, and the runtime's ``revision`` when it has one): a restart reads it instead of
    measuring (~1 s of forwards for the drift, 2-4 s for the invariance check with LoRA rows,
    on 2 cores)."""
    if name == REFERENCE or served.modality != "text":  # the sample is text
        return None
    tag = f"-{hashlib.sha256(revision.encode()).hexdigest()[:8]}" if revision else ""
    path = cached(options, f"forced-{name}{tag}", reference, gate)
    trial = None
    if path.exists():
        try:
            trial = Trial(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            log.warning("runtime %s: cached admission report %s unusable (%s); measuring again",
                        name, path, e)
    if trial is None:
        sample = fixed_sample()
        try:
            ref = np.asarray(reference.embed(sample), dtype=np.float32)
            trial = gated(name, served, ref, sample, gate)
            if trial.passed:
                admit(trial, served, sample, _invariance_loras(reference))
        except Exception as e:  # noqa: BLE001 - a report, not a gate: serving goes on
            log.warning("runtime %s (forced): its admission could not be measured (%s: %s); "
                        "served unchecked", name, type(e).__name__, str(e)[:200])
            return None
        _put(path, asdict(trial))
    if trial.passed:
        log.info("runtime %s (forced): auto's admission holds here (mean drift %.1e, min cosine "
                 "%.4f, alone vs mixed batches %.1e)", name, trial.mean_drift, trial.min_cosine,
                 trial.batch_max_diff)
    else:
        log.warning("runtime %s (forced) would NOT be served by TAILOR_RUNTIME=auto here: %s. It "
                    "is served because the settings name it; auto serves the fastest runtime "
                    "that keeps accuracy and batch invariance", name, trial.why_not())
    return trial


def serving_encoder(encoder: TorchEncoder, runtime: str, quantize: str,
                    options: RuntimeOptions) -> tuple[Encoder, str]:
    """The serving encoder for the settings ``TAILOR_RUNTIME`` (``runtime``) and
    ``TAILOR_ONNX_QUANTIZE``, and how it was chosen for the start-up line: ``auto`` measures
    in a child process (``auto(isolate=True)``); any other value names a registered runtime
    (``selected_by``), which raises when it cannot serve this backbone here, and whose
    admission is reported (``forced_admission``)."""
    if runtime == "auto":
        served, choice = auto(encoder, options, isolate=True)
        return served, f"auto -> {choice.runtime}"
    chosen = selected_by(runtime, quantize)
    served = open_runtime(chosen, encoder, options)
    forced_admission(chosen.name, served, encoder, options, revision=chosen.revision)
    return served, runtime


def _child(spec: dict[str, Any]) -> None:
    """``python -m export.runtimes.auto`` (the spec on stdin): measure and write the decision (no serving)."""
    import torch

    from adapters.encoders import open_encoder

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if spec["torch_threads"]:
        torch.set_num_threads(spec["torch_threads"])
    encoder = open_encoder(spec["backbone_path"], name=spec["name"],
                           max_batch_rows=spec["max_batch_rows"], workers=spec["workers"])
    options = RuntimeOptions(Path(spec["cache_dir"]), spec["threads"], tuple(spec["providers"]),
                             spec["cuda_tf32"])
    gate = Gate(**spec["gate"])
    path = cached(options, "choice", encoder, gate)
    choice, _ = choose(encoder, candidates_for(encoder, options), gate)
    _write(path, choice, gate)


__all__ = ["GATE", "Candidate", "Choice", "Gate", "Trial", "admit", "auto", "cache_key",
           "candidates_for", "choose", "encoder_for", "fixed_sample", "forced_admission",
           "serving_encoder"]


if __name__ == "__main__":
    _child(receive(dict[str, Any]))
