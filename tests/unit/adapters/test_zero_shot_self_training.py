"""Zero-shot adapters with unlabeled texts self-train (issue 19): the zero-shot head labels the
texts, and the description-prior head is refitted on those pseudo-labels. Synthetic vectors
stand in for embeddings: three well-separated clusters whose label descriptions point only
roughly at them, which is the case self-training is for (the nearest description errs near
the boundaries, the clusters' confident cores show where the boundaries belong). And its
guard: where the labels cut across the texts' clusters (as sentiment does across topics),
the zero-shot head is kept (recipes.py ``cluster_agreement``)."""
import numpy as np
import pytest
import torch

from adapters.heads import LinearHead
from adapters.kinds import build_request, get_kind
from adapters.kinds.head import NO_CLUSTERS_TO_SELF_TRAIN, TOO_FEW_TO_SELF_TRAIN, UNLABELED_UNUSED
from adapters.training.recipes import (MIN_CLUSTER_AGREEMENT, cluster_agreement,
                                       description_prior, description_text,
                                       self_train_zero_shot, zero_shot_head)
from adapters.validation import Limits

DIM, LABELS = 16, ["alpha", "beta", "gamma"]
DESCRIPTIONS = {lab: f"texts about {lab}" for lab in LABELS}


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def world(seed=0, n=600, mix=(1 / 3, 1 / 3, 1 / 3)):
    """Cluster centres, descriptions tilted off them, and n rows drawn with label shares ``mix``."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(len(LABELS), DIM)))
    desc = _unit(centres + 1.3 * _unit(rng.normal(size=(len(LABELS), DIM))))
    y = rng.choice(len(LABELS), n, p=mix)
    x = _unit(centres[y] + 0.3 * rng.normal(size=(n, DIM)))
    return centres, desc, x.astype(np.float32), y


def across_world(seed=0, n=300):
    """Labels across the clusters, as sentiment across topics: the texts group by 4 topics
    (axes 0-3), each label is a small shift along its own axis (4-6), orthogonal to every
    topic; the descriptions point at the labels' axes, tilted by a shared axis (7)."""
    rng = np.random.default_rng(seed)
    eye = np.eye(DIM)
    y = rng.integers(len(LABELS), size=n)
    topic = rng.integers(4, size=n)
    x = _unit(eye[topic] + 0.3 * eye[4 + y] + 0.15 * rng.normal(size=(n, DIM)))
    desc = _unit(eye[4:4 + len(LABELS)] + 0.5 * eye[7])
    return None, desc, x.astype(np.float32), y


def accuracy(head: LinearHead, x, y) -> float:
    return float((head.predict(x) == y).mean())


def test_self_training_beats_the_plain_zero_shot_head():
    gains = []
    for seed in range(3):
        _, desc, x, y = world(seed, n=1200)
        xu, xt, yt = x[:600], x[600:], y[600:]
        plain = zero_shot_head(desc)
        trained = self_train_zero_shot(plain, xu, description_prior(desc, 3, DIM)).head
        gains.append(accuracy(trained, xt, yt) - accuracy(plain, xt, yt))
    assert min(gains) > 0 and np.mean(gains) > 0.05, gains


def test_pseudo_labels_are_balanced_per_label():
    """Most unlabeled texts are of one label: it gets no more than its equal share."""
    _, desc, x, _ = world(1, n=600, mix=(0.8, 0.1, 0.1))
    plain = zero_shot_head(desc)
    assert np.bincount(plain.predict(x), minlength=3).max() > 300  # the zero-shot head's view
    y = self_train_zero_shot(plain, x, description_prior(desc, 3, DIM)).pseudo_labels
    assert np.bincount(y, minlength=3).max() <= 600 // 3


class WorldEncoder:
    """An Encoder as head training uses it: texts "u<i>" are unlabeled rows, descriptions (in
    either phrasing) their label's description vector."""

    dim = DIM

    def __init__(self, desc, x):
        self.vec = {f"u{i}": v for i, v in enumerate(x)}
        for lab, d in zip(LABELS, desc):
            self.vec[DESCRIPTIONS[lab]] = self.vec[description_text(DESCRIPTIONS[lab])] = d

    def embed(self, texts, loras=None):
        return torch.tensor(np.array([self.vec[t] for t in texts]), dtype=torch.float32)


def create(kind, unlabeled, options=None, make_world=world):
    _, desc, x, _ = make_world(2, n=300)
    k = get_kind(kind)
    request = build_request(k, None, options, Limits(), DESCRIPTIONS, unlabeled)
    art = k.train(WorldEncoder(desc, x), request)
    return art, LinearHead.from_tensors(art.tensors, False)


@pytest.mark.parametrize("kind", ["head", "auto"])
def test_a_zero_shot_create_with_unlabeled_texts_self_trains_and_says_so(kind):
    texts = [f"u{i}" for i in range(300)]
    art, head = create(kind, texts)
    _, plain = create(kind, None)
    assert 0 < art.metrics["pseudo_labels"] <= 300
    assert art.metrics["unlabeled"] == 300
    check = art.metrics["self_train"]
    assert check["used"] is True and "skipped" not in check
    assert check["cluster_agreement"] >= MIN_CLUSTER_AGREEMENT
    assert UNLABELED_UNUSED not in art.warnings
    # the record says what it learned from, not "the label descriptions alone"
    n = art.metrics["pseudo_labels"]
    assert any(f"descriptions and {n} unlabeled texts" in w for w in art.warnings), art.warnings
    assert not torch.equal(head.weight, plain.weight)
    if kind == "auto":
        assert "self-trained" in art.metrics["recipe"]
    # at most self_train_texts of them are used (a seeded sample)
    small, _ = create(kind, texts, {"self_train_texts": 30})
    assert small.metrics["pseudo_labels"] <= 30


@pytest.mark.parametrize("kind", ["head", "auto"])
def test_without_unlabeled_texts_or_switched_off_the_zero_shot_head_is_as_before(kind):
    _, desc, _, _ = world(2, n=300)
    art, head = create(kind, None)
    off, off_head = create(kind, [f"u{i}" for i in range(300)], {"self_train_texts": 0})
    expected = zero_shot_head(desc)  # templated and plain descriptions share a vector here
    for h in (head, off_head):
        assert torch.allclose(h.weight, expected.weight) and torch.allclose(h.bias, expected.bias)
    assert "pseudo_labels" not in art.metrics and "pseudo_labels" not in off.metrics
    assert UNLABELED_UNUSED in off.warnings


@pytest.mark.parametrize("kind", ["head", "auto"])
def test_too_few_unlabeled_texts_leave_the_zero_shot_head_as_it_is_and_say_so(kind):
    """10 texts over 3 labels: a head fitted on them would learn their counts, not the labels."""
    art, head = create(kind, [f"u{i}" for i in range(10)])
    _, plain = create(kind, None)
    assert torch.equal(head.weight, plain.weight) and torch.equal(head.bias, plain.bias)
    assert art.metrics["pseudo_labels"] == 0
    assert art.metrics["self_train"] == {"used": False, "skipped": "too_few"}
    assert TOO_FEW_TO_SELF_TRAIN in art.warnings and UNLABELED_UNUSED not in art.warnings


@pytest.mark.parametrize("seed", range(3))
def test_cluster_agreement_tells_labels_that_are_clusters_from_labels_across_them(seed):
    """Topics (the labels are the clusters) well above the threshold, labels across the
    clusters near 0 (chance-corrected): the signal the guard reads, from no label."""
    for make_world, high in ((world, True), (across_world, False)):
        _, desc, x, _ = make_world(seed, n=300)
        agreement = cluster_agreement(x, zero_shot_head(desc).predict(x), len(LABELS), seed)
        assert (agreement > 3 * MIN_CLUSTER_AGREEMENT) if high else (agreement < MIN_CLUSTER_AGREEMENT / 2), (
            make_world.__name__, agreement)


@pytest.mark.parametrize("kind", ["head", "auto"])
def test_labels_across_the_texts_clusters_keep_the_zero_shot_head_and_say_why(kind):
    """The zero-shot head labels enough texts of every label, but its labels do not follow
    how the texts group: self-training would fit noise (rotten_tomatoes over HTTP: -1.2
    points), so the version is the plain zero-shot head, and the record says so."""
    texts = [f"u{i}" for i in range(300)]
    art, head = create(kind, texts, make_world=across_world)
    _, plain = create(kind, None, make_world=across_world)
    assert torch.equal(head.weight, plain.weight) and torch.equal(head.bias, plain.bias)
    assert art.metrics["pseudo_labels"] == 0
    check = art.metrics["self_train"]
    assert check["used"] is False and check["skipped"] == "no_clusters"
    assert check["cluster_agreement"] < check["min_cluster_agreement"] == MIN_CLUSTER_AGREEMENT
    assert NO_CLUSTERS_TO_SELF_TRAIN in art.warnings
    assert TOO_FEW_TO_SELF_TRAIN not in art.warnings and UNLABELED_UNUSED not in art.warnings
    if kind == "auto":
        assert art.metrics["recipe"] == "zero-shot head"


def skewed_world(seed=0, n=300):
    """80% of the texts are alpha: the unlabeled texts are the first 300 rows, the rest test."""
    return world(1, n=600, mix=(0.8, 0.1, 0.1))


@pytest.mark.parametrize("kind", ["head", "auto"])
def test_a_label_most_texts_have_stays_the_most_answered(kind):
    """The pseudo-labels' shares are the texts' distribution as the zero-shot head reads it,
    not a choice of examples: under the default class_prior they are kept (removing them
    pushed Reuters R8's rare labels and cost 3-7 points; here: alpha answered 64% of the
    time instead of 75%, accuracy 0.80 instead of 0.87). A stated prior still replaces them."""
    texts = [f"u{i}" for i in range(300)]
    _, _, x, y = skewed_world()
    xt, yt = x[300:], y[300:]
    art, head = create(kind, texts, make_world=skewed_world)
    assert art.metrics["self_train"]["used"] is True
    answered = np.bincount(head.predict(xt), minlength=3) / len(xt)
    assert answered[0] > 0.7 and accuracy(head, xt, yt) > 0.85, (answered, accuracy(head, xt, yt))
    _, stated = create(kind, texts, {"class_prior": {lab: 1 / 3 for lab in LABELS}},
                       make_world=skewed_world)
    assert np.bincount(stated.predict(xt), minlength=3)[0] / len(xt) < answered[0] - 0.05
