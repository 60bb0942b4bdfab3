"""The retrieval score of benchmarks/bench_openai.py: leave-one-out neighbours by cosine."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_openai import knn_scores

E = np.array([[1, 0], [0.9, 0.1], [0.1, 0.9], [0, 1]], dtype=float)
E /= np.linalg.norm(E, axis=1, keepdims=True)


@pytest.mark.parametrize("labels, k, expect", [
    (["a", "a", "b", "b"], 1, (1.0, 1.0)),  # every nearest neighbour shares the label
    (["a", "b", "a", "b"], 1, (0.0, 0.0)),  # none does
    (["a", "a", "b", "b"], 2, (1.0, 0.5)),  # 2 nearest: one of each label for every query
    (["a", "a", "a", "b"], 3, (0.5, 0.5)),  # the query itself is never its own neighbour
])
def test_knn_scores(labels, k, expect):
    assert knn_scores(E, labels, k) == pytest.approx(expect)
