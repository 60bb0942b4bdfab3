"""Shared evaluation: description embeddings per template, accuracy of a method over seeds,
markdown tables. A method is ``fn(split, ctx) -> Linear | np.ndarray`` (a head over frozen
embeddings, or predicted label ids for methods that change the embeddings)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.label_descriptions import DESCRIPTIONS

from .data import Split, embed_texts, split
from .recipes import Linear

RESULTS = Path(__file__).resolve().parent / "results"


def _lcfirst(s: str) -> str:
    s = s.strip().rstrip(".")
    return s[:1].lower() + s[1:]


TEMPLATES: dict[str, Callable[[str, str], str]] = {
    "label name": lambda label, desc: label,
    "This sentence is {label}": lambda label, desc: f"This sentence is {label}",
    "description": lambda label, desc: desc,
    "This text is {description}": lambda label, desc: f"This text is {_lcfirst(desc)}.",
    "{label}: {description}": lambda label, desc: f"{label}: {desc}",
}


@lru_cache(maxsize=None)
def description_texts(name: str, template: str = "description") -> tuple[str, ...]:
    desc = DESCRIPTIONS[name]
    return tuple(TEMPLATES[template](lab, desc[lab]) for lab in sorted(desc))


@lru_cache(maxsize=None)
def description_embeddings(name: str, template: str = "description") -> np.ndarray:
    """[labels, dim] in sorted label order (the order of Split.labels)."""
    return embed_texts(list(description_texts(name, template)))


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean())


def run(method, names, seeds: int = 5, **split_kw) -> dict[str, list[float]]:
    """{data set: [accuracy per seed]}"""
    out: dict[str, list[float]] = {}
    for name in names:
        out[name] = []
        for seed in range(seeds):
            s = split(name, seed, **split_kw)
            res = method(s)
            pred = res.predict(s.x_test) if isinstance(res, Linear) else np.asarray(res)
            out[name].append(accuracy(pred, s.y_test))
    return out


def table(results: dict[str, dict[str, list[float]]], names, baseline: str | None = None,
          sd: bool = False) -> str:
    """Markdown: one row per method, one column per data set (mean over seeds), the mean over
    data sets, and its difference from ``baseline`` in points."""
    head = "| method | " + " | ".join(names) + " | mean |" + (" vs baseline |" if baseline else "")
    sep = "|---" * (len(names) + 2 + bool(baseline)) + "|"
    lines = [head, sep]
    base = np.mean([np.mean(results[baseline][n]) for n in names]) if baseline else None
    for m, r in results.items():
        means = [np.mean(r[n]) for n in names]
        cells = [f"{100 * np.mean(r[n]):.1f}" + (f" ± {100 * np.std(r[n]):.1f}" if sd else "")
                 for n in names]
        row = f"| {m} | " + " | ".join(cells) + f" | {100 * np.mean(means):.1f} |"
        if baseline:
            row += f" {100 * (np.mean(means) - base):+.1f} |"
        lines.append(row)
    return "\n".join(lines)


def save(tag: str, results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps(results, indent=1))


def unl_center(s: Split) -> np.ndarray:
    return s.x_unl.mean(0)
