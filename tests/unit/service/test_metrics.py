"""service/metrics.py: the Recorder's counts, its Prometheus text, and the cardinality bound
(past N label sets per family the least used adapters fold into adapter="other", every
exposed counter staying monotonic)."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import LATENCY_BUCKETS, OTHER, Recorder, family_names

ADAPTER_FAMILIES = ("tailor_adapter_requests", "tailor_adapter_request_duration_seconds",
                    "tailor_adapter_predictions", "tailor_adapter_cold_loads")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def parse(text: str) -> dict[str, list]:
    """family name -> samples, through prometheus_client's own parser (the format is valid)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def samples(rec: Recorder, name: str, sample: str | None = None) -> dict[tuple, float]:
    fams = parse(rec.render())
    return {tuple(sorted(s.labels.items())): s.value for s in fams[name]
            if sample is None or s.name == sample}


def label_sets(rec: Recorder, family: str) -> set[tuple]:
    """Distinct label sets of a family (a histogram's buckets are one label set)."""
    fams = parse(rec.render())
    return {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            for s in fams[family]}


def requests(rec: Recorder) -> dict[tuple[str, str, str], float]:
    return {(d["tenant"], d["adapter"], d["code"]): v for d, v in
            ((dict(k), v) for k, v in samples(rec, "tailor_adapter_requests").items())}


def test_counts_per_tenant_adapter_and_code():
    rec = Recorder(max_series=100)
    sent = Counter()
    for tenant, adapter, code, n in [("acme", "tickets@1", 200, 5), ("acme", "tickets@2", 200, 3),
                                     ("acme", "tickets@2", 429, 2), ("globex", "tickets@1", 200, 4),
                                     ("globex", "none", 404, 1)]:
        for _ in range(n):
            rec.request(tenant, adapter, code, 0.02)
        sent[(tenant, adapter, str(code))] += n
    assert requests(rec) == dict(sent)
    counts = samples(rec, "tailor_adapter_request_duration_seconds",
                     "tailor_adapter_request_duration_seconds_count")
    assert counts[(("adapter", "tickets@2"), ("tenant", "acme"))] == 5


@pytest.mark.parametrize("seconds, first_bucket", [
    (0.001, 0.005), (0.005, 0.005), (0.0051, 0.01), (0.3, 0.5), (29.0, 30.0), (31.0, float("inf"))])
def test_latency_lands_in_the_right_bucket(seconds, first_bucket):
    rec = Recorder()
    rec.request("t", "a@1", 200, seconds)
    buckets = {dict(k)["le"]: v for k, v in samples(
        rec, "tailor_adapter_request_duration_seconds",
        "tailor_adapter_request_duration_seconds_bucket").items()}
    assert set(map(float, buckets)) == {*LATENCY_BUCKETS, float("inf")}
    for le, v in buckets.items():
        assert v == (1.0 if float(le) >= first_bucket else 0.0), (le, v)
    total = samples(rec, "tailor_adapter_request_duration_seconds",
                    "tailor_adapter_request_duration_seconds_sum")
    assert list(total.values()) == [pytest.approx(seconds)]


def test_predictions_cold_loads_cache_batch_queue():
    rec = Recorder()
    rec.predictions("acme", "t@1", ["bug", "billing", "bug"])
    rec.predictions("acme", "t@1", ['say "hi"\n'])  # a label with quotes and a newline
    rec.cold_load("acme", "t@1")
    for hit in (True, True, False):
        rec.cache(hit)
    for rows in (1, 3, 64):
        rec.batch(rows)
    rec.queue(17, 4096)
    preds = {dict(k)["label"]: v for k, v in samples(rec, "tailor_adapter_predictions").items()}
    assert preds == {"bug": 2, "billing": 1, 'say "hi"\n': 1}
    assert list(samples(rec, "tailor_adapter_cold_loads").values()) == [1]
    assert samples(rec, "tailor_registry_cache_hits") == {(): 2}
    assert samples(rec, "tailor_registry_cache_misses") == {(): 1}
    batch = samples(rec, "tailor_backbone_batch_rows", "tailor_backbone_batch_rows_bucket")
    assert batch[(("le", "2.0"),)] == 1 and batch[(("le", "4.0"),)] == 2 and batch[(("le", "64.0"),)] == 3
    assert samples(rec, "tailor_queue_rows") == {(): 17}
    assert samples(rec, "tailor_queue_capacity_rows") == {(): 4096}


def test_jobs_by_state_finished_and_durations():
    rec = Recorder()
    for job, states in {"a": ["queued", "running", "succeeded"], "b": ["queued", "running"],
                        "c": ["queued"], "d": ["queued", "running", "failed"]}.items():
        for s in states:
            rec.job_state(job, "lora", s)
    rec.job_duration("lora", 14.0)
    gauge = {dict(k)["state"]: v for k, v in samples(rec, "tailor_jobs").items()}
    assert gauge == {"queued": 1, "running": 1}
    finished = {(dict(k)["kind"], dict(k)["state"]): v
                for k, v in samples(rec, "tailor_jobs_finished").items()}
    assert finished == {("lora", "succeeded"): 1, ("lora", "failed"): 1}
    count = samples(rec, "tailor_job_duration_seconds", "tailor_job_duration_seconds_count")
    assert count == {(("kind", "lora"),): 1}
    with pytest.raises(ValueError, match="unknown job state"):
        rec.job_state("e", "lora", "done")
    # a store-backed queue: every replica reads the same counts at scrape time
    rec.jobs_from(lambda: {"queued": 5, "running": 2})
    assert {dict(k)["state"]: v for k, v in samples(rec, "tailor_jobs").items()} == {"queued": 5, "running": 2}
    rec.jobs_from(lambda: 1 / 0)  # a broken source never fails the scrape
    assert {dict(k)["state"]: v for k, v in samples(rec, "tailor_jobs").items()} == {"queued": 0, "running": 0}


def test_every_family_name_is_known():
    rec = Recorder()
    rec.request("t", "a@1", 200, 0.1)
    rec.keys_reloaded(False)
    rendered = {s.name for f in text_string_to_metric_families(rec.render()) for s in f.samples}
    assert rendered <= family_names()
    assert {"tailor_adapter_requests_total", "tailor_jobs", "tailor_queue_rows",
            "tailor_backbone_batch_rows_bucket", "tailor_job_duration_seconds_bucket",
            "tailor_registry_cache_hits_total", "tailor_registry_cache_misses_total",
            "tailor_adapter_cold_loads_total", "tailor_adapter_predictions_total",
            "tailor_adapter_request_duration_seconds_bucket"} <= family_names()


# -- the cardinality bound ----------------------------------------------------------------------
def test_500_adapters_stay_within_the_bound_and_the_busiest_keep_their_label():
    rec = Recorder(max_series=50, clock=Clock())
    hot = [f"hot{i}@1" for i in range(10)]
    for _ in range(20):
        for a in hot:
            rec.request("acme", a, 200, 0.01)
            rec.predictions("acme", a, ["x", "y"])
    sent = Counter({("acme", a): 20 for a in hot})
    for i in range(500):
        a = f"cold{i}@1"
        rec.request("acme", a, 200 if i % 7 else 500, 0.01)
        rec.predictions("acme", a, ["x"])
        rec.cold_load("acme", a)
        sent[("acme", a)] += 1
    for family in ADAPTER_FAMILIES:
        assert len(label_sets(rec, family)) <= 50, family
    got = requests(rec)
    for a in hot:  # the busiest are all exposed, with exact counts
        assert got[("acme", a, "200")] == 20
    assert got[("acme", OTHER, "200")] > 0 and got[("acme", OTHER, "500")] > 0
    # exposed + other == sent, less the counts of the few adapters folded to make room for
    # the "other" label sets (their own series went stale; their later requests count as other)
    assert sum(sent.values()) - 5 <= sum(got.values()) <= sum(sent.values())
    assert samples(rec, "tailor_metrics_folded_adapters")[()] > 100  # (tracking is bounded too)


def test_counters_never_decrease_while_adapters_fold_and_return():
    clock = Clock()
    rec = Recorder(max_series=6, half_life_s=60, clock=clock)
    previous: dict[tuple, float] = {}
    for step in range(400):
        clock.t += 1
        busy = f"a{(step // 50) % 10}@1"  # the busy adapter changes every 50 steps
        rec.request("t", busy, 200, 0.01)
        rec.request("t", f"a{step % 10}@1", 200, 0.01)
        fams = parse(rec.render())  # once per step: every family from one scrape
        now = {(s.labels["tenant"], s.labels["adapter"], s.labels["code"]): s.value
               for s in fams["tailor_adapter_requests"]}
        for key, v in now.items():
            assert v >= previous.get(key, 0.0), (step, key)
        for family in ADAPTER_FAMILIES:
            sets = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                    for s in fams[family]}
            assert len(sets) <= 6
        previous.update(now)
        if step % 50 >= 30:  # a newly busy adapter takes a slot once clearly the busiest
            assert ("t", busy, "200") in now, step


def test_a_folded_adapter_returns_only_when_clearly_busier():
    clock = Clock()
    rec = Recorder(max_series=3, half_life_s=60, clock=clock)
    for a in ("a@1", "b@1", "c@1"):
        for _ in range(3):
            rec.request("t", a, 200, 0.01)
    rec.request("t", "d@1", 200, 0.01)  # 1 request vs 3: folds (and makes room for "other")
    exposed = {k[1] for k in requests(rec)}
    assert "d@1" not in exposed and OTHER in exposed
    for _ in range(10):
        rec.request("t", "d@1", 200, 0.01)
    assert ("t", "d@1", "200") in requests(rec)
    # much later, one request of a new adapter beats adapters idle for many half-lives
    clock.t += 3600
    rec.request("t", "e@1", 200, 0.01)
    assert ("t", "e@1", "200") in requests(rec)


def test_uniform_traffic_does_not_churn_series():
    rec = Recorder(max_series=20, clock=Clock())
    adapters = [f"a{i}@1" for i in range(40)]
    for a in adapters:
        rec.request("t", a, 200, 0.01)
    before = {k for k in requests(rec)}
    for _ in range(5):
        for a in adapters:
            rec.request("t", a, 200, 0.01)
    assert {k for k in requests(rec)} == before


def test_tracked_adapters_stay_bounded():
    rec = Recorder(max_series=8, clock=Clock())
    for i in range(2000):
        rec.request("t", f"a{i}@1", 404, 0.0)
    assert len(rec._usage) <= rec._max_tracked
    assert len(label_sets(rec, "tailor_adapter_requests")) <= 8


def test_threads_lose_no_count():
    rec = Recorder(max_series=1000)

    def work(n):
        for i in range(500):
            rec.request(f"t{n % 2}", f"a{i % 25}@1", 200, 0.001)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(requests(rec).values()) == 8 * 500


@pytest.mark.parametrize("bad", [0, -1])
def test_bound_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_series"):
        Recorder(max_series=bad)


def test_prometheus_client_writes_the_text_and_odd_label_values_round_trip():
    """The exposition is prometheus_client's (``generate_latest`` over the Recorder as a
    collector, on a registry of its own: nothing lands in the process-wide registry that
    BentoML's multiprocess files would keep forever)."""
    import prometheus_client

    rec = Recorder()
    odd = 'a "quoted"\\label\nwith a newline'
    rec.predictions("acme", "news@1", [odd, odd])
    got = {dict(k)["label"]: v for k, v in samples(rec, "tailor_adapter_predictions").items()}
    assert got == {odd: 2}
    assert rec.render() == prometheus_client.generate_latest(rec.registry).decode()
    assert "tailor_adapter_predictions_total" not in prometheus_client.generate_latest().decode()
