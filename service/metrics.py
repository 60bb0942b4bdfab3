"""Tailor's own Prometheus metrics: per tenant and adapter, the registry cache, the batcher,
jobs. One ``Recorder`` per serving process; the domain's events call its methods, and
BentoML's ``/metrics`` shows ``render()`` after its own series. The Recorder keeps the counts
(and the cardinality bound below); ``prometheus_client`` writes the exposition: the Recorder
is a custom collector (``collect()`` yields its families as they are now) on a registry of
its own, rendered with ``generate_latest``.

How they reach ``/metrics``: BentoML 1.4's ``/metrics`` handler calls the service's
``__metrics__(content: str) -> str`` with its own exposition text (its series, aggregated
over the workers' prometheus_client multiprocess files under
``$BENTOML_HOME/prometheus_multiproc_dir``) and serves what that returns. Tailor runs one
worker per pod (``workers=1``; parallelism is threads around one backbone), so this
process's recorder is the whole pod's view. (prometheus_client objects created in the worker
would be aggregated across workers by BentoML too, but a series once written to those files
can never be removed, and the cardinality bound below has to drop series: hence a collector
over the Recorder's own counts, on a private ``CollectorRegistry``.)

Cardinality: ``tenant`` comes from the key file (bounded by the operator), but adapter
names are made by clients. Each family keeps at most ``max_series`` label sets: past that,
the least used adapters fold into ``adapter="other"`` (their tenant is kept). "Least used"
is a request count decayed with a half-life, so an adapter busy last week does not hold a
slot today. Every exposed counter stays monotonic: an adapter that folds stops being exposed
(its series goes stale in Prometheus) and its later increments go to ``other``, which only
ever grows; one that comes back resumes its own count. To keep series from churning, a
folded adapter takes the slot of an exposed one only when it is clearly busier
(``PROMOTE_FACTOR`` times the decayed count).
"""
from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, Metric)
from prometheus_client.utils import floatToGoString

from adapters.states import ACTIVE, JobState

OTHER = "other"          # adapters folded by the cardinality bound
NONE = "none"            # no adapter (or tenant) could be resolved: 401, 404, invalid request

# Seconds; a predict of a few texts on 2 cores is ~10-50 ms, a queue-bound refusal waits 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
JOB_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
JOB_STATES = tuple(JobState)
ACTIVE_JOB_STATES = ACTIVE
PROMOTE_FACTOR = 2.0
LOG2_PROMOTE = math.log2(PROMOTE_FACTOR)

Key = tuple[str, str]          # (tenant, adapter)
Extra = tuple[str, ...]        # the family's other label values, e.g. (code,) or (label,)


@dataclass
class _Family:
    """One adapter-labelled metric family: exposed series per (tenant, adapter), plus the
    ``other`` series per (tenant, extra labels)."""

    name: str
    help: str
    kind: str                              # "counter" | "histogram"
    extra: tuple[str, ...] = ()            # label names after tenant, adapter
    buckets: tuple[float, ...] = ()
    own: dict[Key, dict[Extra, list[float]]] = field(default_factory=dict)
    other: dict[tuple[str, Extra], list[float]] = field(default_factory=dict)
    live: int = 0                          # label sets exposed now

    def zero(self) -> list[float]:
        # counter: [value]; histogram: [count per bucket (+Inf last)..., sum, count]
        return [0.0] if self.kind == "counter" else [0.0] * (len(self.buckets) + 3)

    def add(self, cell: list[float], value: float) -> None:
        if self.kind == "counter":
            cell[0] += value
        else:
            cell[bisect.bisect_left(self.buckets, value)] += 1
            cell[-2] += value
            cell[-1] += 1

    def width(self, key: Key) -> int:
        return len(self.own.get(key, ()))


class Recorder:
    """Thread-safe recorder of Tailor's metrics. Cheap enough for every request: a lock, a
    few dict operations; the rendering happens at scrape time."""

    def __init__(self, max_series: int = 1000, *, half_life_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_series < 1:
            raise ValueError(f"max_series must be >= 1, got {max_series}")
        self.max_series = max_series
        self.half_life_s = half_life_s
        self.clock = clock
        self._lock = threading.Lock()
        self._usage: dict[Key, float] = {}        # key -> rank (see _rank)
        self._victims: dict[str, Key | None] = {}  # family -> its least used exposed adapter
        self._admitted: set[Key] = set()
        self._max_tracked = max(64, 8 * max_series)
        self.requests = _Family("tailor_adapter_requests", "Requests per tenant, adapter "
                                "(name@version) and HTTP status code", "counter", ("code",))
        self.durations = _Family("tailor_adapter_request_duration_seconds", "Request latency "
                                 "per tenant and adapter, seconds", "histogram",
                                 buckets=LATENCY_BUCKETS)
        self.predicted = _Family("tailor_adapter_predictions", "Predicted labels per tenant "
                                 "and adapter (watch the mix drift)", "counter", ("label",))
        self.cold_loads = _Family("tailor_adapter_cold_loads", "Adapters loaded from the "
                                  "store into the in-memory cache", "counter")
        self._families = (self.requests, self.durations, self.predicted, self.cold_loads)
        self._cache = {"hits": 0.0, "misses": 0.0}
        self._batch = _Family("tailor_backbone_batch_rows", "Rows per backbone forward",
                              "histogram", buckets=BATCH_ROWS_BUCKETS)
        self._batch_cell = self._batch.zero()
        self._queue_rows = 0.0
        self._queue_capacity: float | None = None
        self._jobs_active: dict[str, str] = {}                 # job id -> queued/running
        self._jobs_finished: dict[tuple[str, str], float] = {}  # (kind, state) -> count
        self._job_durations: dict[str, list[float]] = {}       # kind -> histogram cell
        self._job_hist = _Family("tailor_job_duration_seconds", "", "histogram",
                                 buckets=JOB_DURATION_BUCKETS)
        self._jobs_source: Callable[[], Mapping[str, int]] | None = None
        self._keys: dict[str, float] = {}
        self._key_reloads = {"ok": 0.0, "error": 0.0}
        self.overflow = 0  # label sets recorded past the bound with no adapter left to fold
        # requests per tenant and code, never folded (tenants come from the key file): the
        # admin view's numbers
        self._tenant_codes: dict[str, dict[str, int]] = {}
        self.registry = CollectorRegistry(auto_describe=False)  # this recorder's alone
        self.registry.register(self)

    # -- domain events ------------------------------------------------------------------------
    def request(self, tenant: str, adapter: str, code: int | str, seconds: float) -> None:
        """One answered request that named an adapter (``name@version`` when it resolved,
        ``NONE`` when it did not); ``code`` is the HTTP status sent."""
        key = (tenant, adapter)
        with self._lock:
            codes = self._tenant_codes.setdefault(tenant, {})
            codes[str(code)] = codes.get(str(code), 0) + 1
            self._use(key)
            self._record(self.requests, key, (str(code),), 1.0)
            self._record(self.durations, key, (), max(0.0, float(seconds)))

    def predictions(self, tenant: str, adapter: str, labels: Iterable[str]) -> None:
        """The top label of each predicted row of one request."""
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        key = (tenant, adapter)
        with self._lock:
            for label, n in counts.items():
                self._record(self.predicted, key, (str(label),), float(n))

    def cold_load(self, tenant: str, adapter: str) -> None:
        """An adapter version was read from the store (a registry cache miss that loaded)."""
        with self._lock:
            self._record(self.cold_loads, (tenant, adapter), (), 1.0)

    def cache(self, hit: bool) -> None:
        with self._lock:
            self._cache["hits" if hit else "misses"] += 1

    def batch(self, rows: int) -> None:
        """One backbone forward of ``rows`` rows (all adapters together)."""
        with self._lock:
            self._batch.add(self._batch_cell, float(rows))

    def queue(self, rows: int, capacity: int | None = None) -> None:
        """Rows waiting for the backbone now (and the queue's limit, for saturation alerts)."""
        with self._lock:
            self._queue_rows = float(rows)
            if capacity is not None:
                self._queue_capacity = float(capacity)

    def job_state(self, job_id: str, kind: str, state: JobState | str) -> None:
        """A job entered ``state``. Queued and running jobs are counted by state (a gauge);
        finished ones by kind and final state (a counter)."""
        if state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}; one of {[s.value for s in JobState]}")
        value = JobState(state).value
        with self._lock:
            if state in ACTIVE_JOB_STATES:
                self._jobs_active[job_id] = value
            else:
                self._jobs_active.pop(job_id, None)
                k = (kind, value)
                self._jobs_finished[k] = self._jobs_finished.get(k, 0.0) + 1

    def job_duration(self, kind: str, seconds: float) -> None:
        """How long a finished job ran (started to finished), seconds."""
        with self._lock:
            cell = self._job_durations.setdefault(kind, self._job_hist.zero())
            self._job_hist.add(cell, max(0.0, float(seconds)))

    def jobs_from(self, source: Callable[[], Mapping[str, int]] | None) -> None:
        """Count queued/running jobs with ``source()`` at scrape time instead (a job queue in
        the shared store: every replica then reports the same numbers; alert on ``max``)."""
        self._jobs_source = source

    def keys_reloaded(self, ok: bool, keys: int | None = None, tenants: int | None = None) -> None:
        """The API key file was re-read: loaded (``ok``) or refused (malformed; old keys kept)."""
        with self._lock:
            self._key_reloads["ok" if ok else "error"] += 1
            if keys is not None:
                self._keys["keys"] = float(keys)
            if tenants is not None:
                self._keys["tenants"] = float(tenants)

    def tenant_requests(self) -> dict[str, dict[str, int]]:
        """Requests this process answered per tenant and status code since it started."""
        with self._lock:
            return {t: dict(codes) for t, codes in self._tenant_codes.items()}

    def keys_loaded(self, keys: int, tenants: int) -> None:
        """The API keys in force at start-up (the gauge; not a reload)."""
        with self._lock:
            self._keys["keys"], self._keys["tenants"] = float(keys), float(tenants)

    # -- the cardinality bound ----------------------------------------------------------------
    # Usage is a request count decayed with a half-life, kept as a rank in the log domain:
    # rank = log2(count at t) + t / half_life. Decay scales every count alike, so ranks
    # compare the same at any later time: the least used adapter stays the least used until
    # it is used again, and the cached victim below stays right until then.
    def _rank(self, key: Key) -> float:
        return self._usage.get(key, -math.inf)

    def _use(self, key: Key) -> None:
        now = self.clock() / self.half_life_s
        old = self._usage.get(key)
        count = 2.0 ** (old - now) if old is not None else 0.0
        self._usage[key] = math.log2(count + 1.0) + now
        if key in self._victims.values():
            self._victims = {f: v for f, v in self._victims.items() if v != key}
        if len(self._usage) > self._max_tracked:
            self._forget()

    def _forget(self) -> None:
        """Stop tracking the least used folded adapters (memory stays bounded); their
        retained counts go too, so a return restarts their series from 0 (a counter reset)."""
        folded = sorted((k for k in self._usage if k not in self._admitted), key=self._rank)
        for k in folded[:len(self._usage) - self._max_tracked // 2]:
            del self._usage[k]
            for f in self._families:
                f.own.pop(k, None)

    def _victim(self, f: _Family, exclude: Key | None = None) -> Key | None:
        """The least used exposed adapter (not ``exclude``) that holds a label set of ``f``."""
        cached = self._victims.get(f.name, ())
        if cached != () and cached != exclude:
            return cached
        best, best_rank = None, math.inf
        for k in self._admitted:
            if k != exclude and f.width(k):
                r = self._rank(k)
                if r < best_rank:
                    best, best_rank = k, r
        if exclude is None or best is None:
            self._victims[f.name] = best
        return best

    def _admit(self, key: Key) -> None:
        self._admitted.add(key)
        self._victims.clear()
        for f in self._families:
            f.live += f.width(key)

    def _demote(self, key: Key) -> None:
        self._admitted.discard(key)
        self._victims.clear()
        for f in self._families:
            f.live -= f.width(key)

    def _fits(self, f: _Family, *, spare: int = 0, claimant: Key | None = None) -> bool:
        """Fold least used adapters until ``f`` has ``spare`` free label sets. For an exposed
        ``claimant``, only adapters it is clearly busier than fold (else False: it should
        fold itself); for ``other`` (no claimant) the bound is hard. False when none is left."""
        while f.live + spare > self.max_series:
            victim = self._victim(f, claimant)
            if victim is None or (claimant is not None and
                                  self._rank(claimant) <= self._rank(victim) + LOG2_PROMOTE):
                return False
            self._demote(victim)
        return True

    def _consider(self, f: _Family, key: Key) -> None:
        """Expose the folded ``key`` while every family has room, or when it is clearly
        busier than the least used exposed adapter of ``f`` (which then folds). Its retained
        label sets count again, in every family."""
        if any(g.live >= self.max_series for g in self._families):
            victim = self._victim(f)
            if victim is None or self._rank(key) <= self._rank(victim) + LOG2_PROMOTE:
                return
            self._demote(victim)
        self._admit(key)
        if not all(self._fits(g, claimant=key) for g in self._families):
            self._demote(key)

    def _record(self, f: _Family, key: Key, extra: Extra, value: float) -> None:
        if key not in self._admitted:
            self._consider(f, key)
        if key in self._admitted:
            series = f.own.setdefault(key, {})
            cell = series.get(extra)
            if cell is None and self._fits(f, spare=1, claimant=key):
                cell = series[extra] = f.zero()
                f.live += 1
                self._victims.pop(f.name, None)  # a new holder of a label set of f
            if cell is not None:
                f.add(cell, value)
                return
            self._demote(key)  # no room and it is the least used itself: it folds
        okey = (key[0], extra)
        cell = f.other.get(okey)
        if cell is None:
            if not self._fits(f, spare=1):
                self.overflow += 1  # only tenants x extra labels left: bounded by the key file
            cell = f.other[okey] = f.zero()
            f.live += 1
        f.add(cell, value)

    # -- exposition ---------------------------------------------------------------------------
    def folded(self) -> int:
        """Tracked adapters whose traffic goes to ``adapter="other"`` now."""
        with self._lock:
            return sum(1 for k in self._usage if k not in self._admitted)

    def render(self) -> str:
        """Prometheus text exposition (format 0.0.4) of every Tailor family."""
        return generate_latest(self.registry).decode()

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol: every Tailor family as it is now."""
        with self._lock:
            snap = self._snapshot()
        return (_family(*fam) for fam in snap)

    def _snapshot(self) -> list[tuple]:
        fams: list[tuple] = []
        for f in self._families:
            rows = []
            for key in self._admitted:
                for extra, cell in f.own.get(key, {}).items():
                    rows.append(((key[0], key[1], *extra), list(cell)))
            for (tenant, extra), cell in f.other.items():
                rows.append(((tenant, OTHER, *extra), list(cell)))
            rows.sort()
            fams.append((f.name, f.help, f.kind, ("tenant", "adapter", *f.extra), f.buckets, rows))
        fams.append(("tailor_registry_cache_hits", "Adapter lookups served from the in-memory "
                     "cache", "counter", (), (), [((), [self._cache["hits"]])]))
        fams.append(("tailor_registry_cache_misses", "Adapter lookups that had to load from the "
                     "store", "counter", (), (), [((), [self._cache["misses"]])]))
        fams.append((self._batch.name, self._batch.help, "histogram", (), BATCH_ROWS_BUCKETS,
                     [((), list(self._batch_cell))]))
        fams.append(("tailor_queue_rows", "Rows waiting for the backbone", "gauge", (), (),
                     [((), [self._queue_rows])]))
        if self._queue_capacity is not None:
            fams.append(("tailor_queue_capacity_rows", "Rows the backbone queue holds before "
                         "answering 429 (TAILOR_MAX_QUEUED_ROWS)", "gauge", (), (),
                         [((), [self._queue_capacity])]))
        active = {s.value: 0.0 for s in ACTIVE_JOB_STATES}
        if self._jobs_source is not None:
            try:
                counts = self._jobs_source()
            except Exception:  # noqa: BLE001 - a scrape must not fail on a store hiccup
                counts = {}
            for s in ACTIVE_JOB_STATES:
                active[s.value] = float(counts.get(s, 0))
        else:
            for s in self._jobs_active.values():
                active[s] += 1
        fams.append(("tailor_jobs", "Training jobs queued or running now", "gauge", ("state",),
                     (), sorted(((s,), [n]) for s, n in active.items())))
        fams.append(("tailor_jobs_finished", "Training jobs finished, by kind and final state",
                     "counter", ("kind", "state"), (),
                     sorted((k, [n]) for k, n in self._jobs_finished.items())))
        fams.append(("tailor_job_duration_seconds", "How long finished jobs ran, seconds",
                     "histogram", ("kind",), JOB_DURATION_BUCKETS,
                     sorted(((k,), list(c)) for k, c in self._job_durations.items())))
        fams.append(("tailor_api_key_reloads", "Reloads of the API key file: ok, or error "
                     "(malformed; the previous keys stay)", "counter", ("result",), (),
                     sorted(((r,), [n]) for r, n in self._key_reloads.items())))
        if self._keys:
            fams.append(("tailor_api_keys", "API keys loaded now", "gauge", (), (),
                         [((), [self._keys.get("keys", 0.0)])]))
        fams.append(("tailor_metrics_series_limit", "Label sets per adapter-labelled family "
                     "before the least used adapters fold into adapter=\"other\"", "gauge", (),
                     (), [((), [float(self.max_series)])]))
        fams.append(("tailor_metrics_folded_adapters", "Adapters whose traffic is counted under "
                     "adapter=\"other\" now", "gauge", (), (),
                     [((), [float(sum(1 for k in self._usage if k not in self._admitted))])]))
        return fams


def family_names() -> set[str]:
    """Every sample name ``render`` can produce (with _total/_bucket/_sum/_count): for the
    tests that check that dashboards and alerts query metrics that exist."""
    r = Recorder(max_series=1)
    r.queue(0, 1)
    r.keys_reloaded(True, 1, 1)
    names = set()
    for name, _, kind, *_ in r._snapshot():
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def _family(name: str, help_: str, kind: str, labelnames: tuple[str, ...],
            buckets: tuple[float, ...], rows: list[tuple[tuple, list[float]]]) -> Metric:
    """One family of ``_snapshot`` as prometheus_client's metric family. A histogram cell
    holds per-bucket counts (+Inf last), then the sum and the count."""
    if kind == "histogram":
        hist = HistogramMetricFamily(name, help_, labels=labelnames)
        les = [floatToGoString(le) for le in (*buckets, math.inf)]
        for values, cell in rows:
            cumulative = itertools.accumulate(cell[:len(les)])
            hist.add_metric(list(values), list(zip(les, cumulative)), cell[-2])
        return hist
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
        name, help_, labels=labelnames)
    for values, cell in rows:
        family.add_metric(list(values), cell[0])
    return family
