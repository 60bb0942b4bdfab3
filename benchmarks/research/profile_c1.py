"""Research (issue 20): where a one-text predict spends its time, in process (cProfile).

    .venv/bin/python -m benchmarks.research.profile_c1
"""
import cProfile, pstats, time, tempfile, statistics, torch
torch.set_num_threads(1)
from adapters import Tailor
from benchmarks.datasets import trec_coarse
t = Tailor.open(tempfile.mkdtemp())
train, test = trec_coarse().few_shot(8, seed=0, max_test=60)
t.create_adapter("default", "q", "head", train)
texts = [x for x, _ in test]
for x in texts[:5]: t.predict("default", "q", [x])
fw, tot = [], []
for x in texts[5:45]:
    a = time.perf_counter(); t.encoder.embed([x]); b = time.perf_counter(); t.predict("default", "q", [x]); c = time.perf_counter()
    fw.append(b - a); tot.append(c - b)
print(f"forward alone median {statistics.median(fw)*1e3:.1f} ms; predict (in process) median {statistics.median(tot)*1e3:.1f} ms")
pr = cProfile.Profile(); pr.enable()
for x in texts[5:45]: t.predict("default", "q", [x])
pr.disable()
pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
