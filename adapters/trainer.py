"""Few-shot training of head adapters, in named phases (cf. setfit ``Trainer.train``):

1. ``validate_examples``  -> texts and label ids, or a 4xx-mapped error naming the problem
2. ``embed``              -> frozen backbone embeddings [rows, dim]
3. ``fit``                -> a LinearHead
4. ``cross_validate``     -> a quality estimate on the posted examples
5. ``assess``             -> warnings when the data is too thin or unbalanced to trust

The trainer returns an artifact; publishing it is the store's job.
"""
from __future__ import annotations

import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import HeadOptions, Limits, shorten
from .errors import InvalidExamples, TooLarge
from .heads import HEAD_FITTERS, LinearHead

Embedder = Callable[[Sequence[str]], torch.Tensor]


@dataclass
class LabeledData:
    texts: list[str]
    labels: list[str]  # the label set, in order
    y: np.ndarray  # [rows] label ids, or [rows, labels] 0/1 when multi_label
    multi_label: bool

    def counts(self) -> dict[str, int]:
        if self.multi_label:
            return {lab: int(self.y[:, j].sum()) for j, lab in enumerate(self.labels)}
        c = Counter(self.y.tolist())
        return {lab: int(c.get(j, 0)) for j, lab in enumerate(self.labels)}


@dataclass
class HeadArtifact:
    """A trained head adapter, ready to be published by the store."""

    labels: list[str]
    multi_label: bool
    head: LinearHead
    options: dict[str, Any]
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    kind: str = "head"

    def tensors(self) -> dict[str, torch.Tensor]:
        return self.head.tensors()


# Characters that show nothing: control, format (zero-width, bidi marks) and separators.
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp", "Zs")


def _check_unicode(v: str, where: str) -> None:
    """Texts and labels go to the tokenizer, into JSON files and back to clients as UTF-8:
    a lone surrogate (JSON ``"\\ud800"``) is not text, so it is refused here rather than
    failing half-way through training or serialization."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidExamples(f"{where} contains an unpaired surrogate ({v[e.start]!r} at "
                              f"character {e.start}), which is not valid Unicode text; send "
                              "UTF-8 text (emoji as one code point or a proper surrogate pair)"
                              ) from None


def _blank(v: str) -> bool:
    """Only whitespace, zero-width or control characters: nothing to classify or show."""
    return not any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE for ch in v)


def _label_text(v: Any, where: str, limits: Limits) -> str:
    if not isinstance(v, str):
        raise InvalidExamples(f"{where} must be a non-empty string, got {shorten(v)}")
    if len(v) > limits.max_label_chars:
        raise InvalidExamples(f"{where} is {len(v)} characters long; the limit is "
                              f"{limits.max_label_chars} (TAILOR_MAX_LABEL_CHARS)")
    if _blank(v):
        raise InvalidExamples(f"{where} must be a non-empty string (not only whitespace or "
                              f"invisible characters), got {shorten(v)}")
    _check_unicode(v, where)
    return v


def validate_text(text: Any, where: str, limits: Limits) -> str:
    if not isinstance(text, str):
        raise InvalidExamples(f"{where} must be a string, got {type(text).__name__}")
    if len(text) > limits.max_chars:
        raise TooLarge(f"{where} has {len(text)} characters; the limit is {limits.max_chars} "
                       "(TAILOR_MAX_CHARS). Shorten or split the text")
    if _blank(text):
        raise InvalidExamples(f"{where} is empty (only whitespace or invisible characters); "
                              "every text needs some words")
    _check_unicode(text, where)
    return text


def validate_label_order(label_order: Any) -> list[str] | None:
    """``options.labels``: None, or a list of distinct strings (any order)."""
    if label_order is None:
        return None
    if (not isinstance(label_order, list) or not all(isinstance(v, str) for v in label_order)
            or len(set(label_order)) != len(label_order)):
        raise InvalidExamples("options.labels must be a list of distinct label strings")
    return label_order


def validate_examples(examples: Any, limits: Limits, label_order: Sequence[str] | None = None
                      ) -> LabeledData:
    """Check the posted examples and turn them into texts + label ids."""
    label_order = validate_label_order(label_order)
    if not isinstance(examples, list) or not examples:
        raise InvalidExamples("examples must be a non-empty list of {\"text\", \"label\"} objects")
    if len(examples) > limits.max_examples:
        raise TooLarge(f"{len(examples)} examples posted; the limit is {limits.max_examples} per "
                       "adapter (TAILOR_MAX_EXAMPLES)")
    texts: list[str] = []
    per_row: list[list[str]] = []
    multi = None
    for i, ex in enumerate(examples):
        where = f"examples[{i}]"
        if not isinstance(ex, dict):
            raise InvalidExamples(f"{where} must be an object with \"text\" and \"label\" (or \"labels\")")
        unknown = set(ex) - {"text", "label", "labels"}
        if unknown:
            raise InvalidExamples(f"{where} has unknown field(s) {sorted(unknown)}; allowed: text, label, labels")
        texts.append(validate_text(ex.get("text"), f"{where}.text", limits))
        has_label, has_labels = ex.get("label") is not None, ex.get("labels") is not None
        if has_label == has_labels:
            raise InvalidExamples(f"{where} needs exactly one of \"label\" (single-label) or "
                                  "\"labels\" (a list, multi-label)")
        if multi is None:
            multi = has_labels
        elif multi != has_labels:
            raise InvalidExamples(f"{where} mixes \"label\" and \"labels\": all examples of an adapter "
                                  "must be single-label (\"label\") or all multi-label (\"labels\")")
        if has_labels:
            labs = ex["labels"]
            if not isinstance(labs, list):
                raise InvalidExamples(f"{where}.labels must be a list of strings")
            per_row.append(sorted({_label_text(v, f"{where}.labels[{j}]", limits) for j, v in enumerate(labs)}))
        else:
            per_row.append([_label_text(ex["label"], f"{where}.label", limits)])

    seen = sorted({lab for labs in per_row for lab in labs})
    by_form: dict[str, list[str]] = {}
    for lab in seen:
        by_form.setdefault(unicodedata.normalize("NFC", lab), []).append(lab)
    twins = [forms for forms in by_form.values() if len(forms) > 1]
    if twins:  # "é" as one code point and as "e" + combining accent: they look the same
        raise InvalidExamples(f"labels {ascii(twins[0])} differ only in Unicode normalization (NFC vs "
                              "NFD) and would look identical to clients; use one form")
    if label_order is not None:
        missing = [lab for lab in label_order if lab not in seen]
        if missing:
            raise InvalidExamples(f"label(s) {missing} have no examples; post at least one example "
                                  "for every label listed in options.labels")
        extra = [lab for lab in seen if lab not in label_order]
        if extra:
            raise InvalidExamples(f"examples use label(s) {extra} that are not in options.labels")
        labels = list(label_order)
    else:
        labels = seen
    if len(labels) > limits.max_labels:
        raise InvalidExamples(f"{len(labels)} labels posted; the limit is {limits.max_labels} per "
                              "adapter (TAILOR_MAX_LABELS)")
    if len(labels) < 2:  # none at all: multi-label examples whose "labels" lists are all empty
        which = f"only one label ({labels[0]!r})" if labels else "no label at all"
        raise InvalidExamples(f"{which} in the examples; a classifier needs examples of at least "
                              "2 different labels")
    index = {lab: j for j, lab in enumerate(labels)}
    if multi:
        y = np.zeros((len(texts), len(labels)), dtype=np.int64)
        for i, labs in enumerate(per_row):
            for lab in labs:
                y[i, index[lab]] = 1
        always = [lab for j, lab in enumerate(labels) if y[:, j].all()]
        if always:
            raise InvalidExamples(f"label(s) {always} are on every example; a multi-label adapter "
                                  "needs examples without each label too")
    else:
        y = np.array([index[labs[0]] for labs in per_row], dtype=np.int64)
    return LabeledData(texts, labels, y, bool(multi))


def fit(x: np.ndarray, data: LabeledData, opts: HeadOptions) -> LinearHead:
    return HEAD_FITTERS[opts.head](x, data.y, multi_label=data.multi_label, c=opts.c,
                                   temperature=opts.temperature, seed=opts.seed)


def _predict(head: LinearHead, x: np.ndarray, multi_label: bool, threshold: float) -> np.ndarray:
    p = head.probabilities(torch.from_numpy(x)).numpy()
    return (p >= threshold).astype(np.int64) if multi_label else p.argmax(axis=1)


def cross_validate(x: np.ndarray, data: LabeledData, opts: HeadOptions) -> dict[str, Any] | None:
    """Stratified k-fold accuracy (single-label) or micro-F1 (multi-label) on the posted
    examples. None when there are too few examples to hold any out."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = data.counts()
    if data.multi_label:
        k = min(opts.cv_folds, len(data.texts))
        splits = KFold(k, shuffle=True, random_state=opts.seed).split(x)
    else:
        k = min(opts.cv_folds, min(counts.values()))
        if k < 2:
            return None
        splits = StratifiedKFold(k, shuffle=True, random_state=opts.seed).split(x, data.y)
    tp = fp = fn = correct = total = 0
    oof_logits: list[np.ndarray] = []
    oof_y: list[np.ndarray] = []
    for tr, te in splits:
        sub = LabeledData([], data.labels, data.y[tr], data.multi_label)
        if data.multi_label and (sub.y.all(axis=0).any() or (~sub.y.astype(bool)).all(axis=0).any()):
            return None  # a fold lacks positives or negatives of some label
        fold_head = fit(x[tr], sub, opts)
        pred = _predict(fold_head, x[te], data.multi_label, opts.threshold)
        oof_logits.append(fold_head.logits(torch.from_numpy(x[te])).numpy())
        oof_y.append(data.y[te])
        if data.multi_label:
            truth = data.y[te]
            tp += int((pred & truth).sum())
            fp += int((pred & (1 - truth)).sum())
            fn += int(((1 - pred) & truth).sum())
        else:
            correct += int((pred == data.y[te]).sum())
            total += len(te)
    if data.multi_label:
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        return {"cv_f1_micro": round(f1, 4), "cv_folds": k}
    temperature = calibrate_temperature(np.concatenate(oof_logits), np.concatenate(oof_y))
    return {"cv_accuracy": round(correct / total, 4), "cv_folds": k, "calibration_scale": temperature}


def calibrate_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The logit scale that minimises the negative log-likelihood of out-of-fold predictions
    (temperature scaling, Guo et al. 2017). Scaling logits never changes the argmax, so the
    head's decisions stay exactly those of the fitted regression while its probabilities
    stop being washed out by the L2 penalty on tiny, normalised embeddings. The scale is
    capped at 10: on separable few-shot folds the likelihood always wants more, and that
    would make every answer look certain."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.geomspace(1.0, 10.0, 40):
        z = logits * t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -logp[np.arange(len(y)), y].mean()
        if nll < best_nll:
            best_t, best_nll = float(t), float(nll)
    return round(best_t, 4)


def assess(data: LabeledData, cv: dict[str, Any] | None) -> list[str]:
    counts = data.counts()
    warnings = []
    lo_label, lo = min(counts.items(), key=lambda kv: kv[1])
    hi = max(counts.values())
    if cv is None:
        warnings.append(f"no quality estimate: label {lo_label!r} has {lo} example(s); post at least "
                        "2 per label (8 or more recommended) to get a cross-validated score")
    elif lo < 4:
        warnings.append(f"thin data: label {lo_label!r} has only {lo} examples; the quality estimate "
                        "is noisy below about 4 per label (8 or more recommended)")
    if lo > 0 and hi / lo > 3:
        warnings.append(f"unbalanced data: the largest label has {hi} examples, {lo_label!r} only {lo}; "
                        "predictions will lean toward the frequent labels")
    if cv is not None and not data.multi_label:
        chance = 1 / len(data.labels)
        if cv["cv_accuracy"] < chance + 0.1:
            warnings.append(f"cross-validated accuracy {cv['cv_accuracy']:.2f} is close to chance "
                            f"({chance:.2f}); the labels may not be separable from these examples")
    return warnings


def train_head(embed: Embedder, examples: Any, options: dict[str, Any] | None,
               limits: Limits = Limits()) -> HeadArtifact:
    """Train a head adapter on frozen embeddings. ``embed`` maps texts to [rows, dim]."""
    opts_raw = dict(options or {})
    label_order = validate_label_order(opts_raw.pop("labels", None))
    opts = HeadOptions.parse(opts_raw)
    data = validate_examples(examples, limits, label_order)
    t0 = time.perf_counter()
    x = embed(data.texts).numpy().astype(np.float32)  # [rows, dim]
    t1 = time.perf_counter()
    head = fit(x, data, opts)
    t2 = time.perf_counter()
    cv = cross_validate(x, data, opts)
    t3 = time.perf_counter()
    if cv and "calibration_scale" in cv:  # single-label: calibrate probabilities, keep decisions
        head = LinearHead(head.weight * cv["calibration_scale"], head.bias * cv["calibration_scale"],
                          head.activation)
    metrics: dict[str, Any] = {"examples": len(data.texts), "per_label": data.counts(),
                               "seconds": {"embed": round(t1 - t0, 4), "fit": round(t2 - t1, 4),
                                           "cross_validate": round(t3 - t2, 4)}}
    if cv:
        metrics.update(cv)
    stored_opts = opts.model_dump()
    if label_order is not None:
        stored_opts["labels"] = list(label_order)
    return HeadArtifact(labels=data.labels, multi_label=data.multi_label, head=head,
                        options=stored_opts, metrics=metrics, warnings=assess(data, cv))
