"""Checks of what a client sends, before anything trains or serves: names and refs, texts,
labeled examples, and the request limits. Every failure is a 4xx-mapped error whose message
names the bad value and what to do (cf. peft ``LoraConfig.__post_init__``).

Trainers receive ``LabeledData`` that already passed here; they never re-check input.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InvalidExamples, InvalidName, InvalidRequest, TooLarge, shorten
from .limits import Limits
from .modalities import MODALITIES, get_modality, wrong_modality
from .modalities.text import blank, check_unicode, validate_text

# Names become folder names: a strict allow-list, never a raw path. No dots (so no ".."),
# no "@" (reserved for name@version), no slashes. Matched with fullmatch: "$" alone would let
# a trailing newline through ("x\n" would become a folder name).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# ASCII digits only, and few of them: str.isdigit() also accepts "²" and "١", and int() of
# thousands of digits raises ValueError (Python's int-string conversion limit).
VERSION_RE = re.compile(r"[0-9]{1,18}")


def validate_name(name: object, what: str = "adapter name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"{what} {shorten(name)} is not allowed: use 1-64 characters from letters, digits, '-' "
            "and '_', starting with a letter or digit")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None for latest)."""
    if not isinstance(ref, str):
        raise InvalidName(f"adapter must be a string like 'name' or 'name@3', got {ref!r}")
    name, sep, version = ref.partition("@")
    validate_name(name)
    if not sep:
        return name, None
    if not VERSION_RE.fullmatch(version) or int(version) < 1:
        raise InvalidName(f"adapter version in {shorten(ref)} must be a positive integer, e.g. '{name}@1'")
    return name, int(version)


def _label_text(v: Any, where: str, limits: Limits) -> str:
    if not isinstance(v, str):
        raise InvalidExamples(f"{where} must be a non-empty string, got {shorten(v)}")
    if len(v) > limits.max_label_chars:
        raise InvalidExamples(f"{where} is {len(v)} characters long; the limit is "
                              f"{limits.max_label_chars} (TAILOR_MAX_LABEL_CHARS)")
    if blank(v):
        raise InvalidExamples(f"{where} must be a non-empty string (not only whitespace or "
                              f"invisible characters), got {shorten(v)}")
    check_unicode(v, where)
    return v


def validate_inputs(inputs: Any, limits: Limits) -> list[Any]:
    """The ``inputs`` of a predict or embed request, read as the deployment's modality:
    strings for text, decoded images for images."""
    m = get_modality(limits.modality)
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(f"inputs must be a non-empty list of {m.shape}")
    if len(inputs) > limits.max_inputs:
        raise TooLarge(f"{len(inputs)} inputs in one request; the limit is {limits.max_inputs} "
                       "(TAILOR_MAX_INPUTS). Split the request")
    return m.read(inputs, "inputs", limits, examples=False)


# -- labeled examples -------------------------------------------------------------------------
@dataclass
class LabeledData:
    """Examples that passed validation: items, the label set in order, and label ids. With
    no items (zero-shot) the labels come from their descriptions."""

    items: list[Any]  # the examples' model inputs, as the modality's reader returned them
    labels: list[str]  # the label set, in order
    y: np.ndarray  # [rows] label ids, or [rows, labels] 0/1 when multi_label
    multi_label: bool

    @property
    def zero_shot(self) -> bool:
        return not self.items

    def counts(self) -> dict[str, int]:
        if self.multi_label:
            return {lab: int(self.y[:, j].sum()) for j, lab in enumerate(self.labels)}
        c = Counter(self.y.tolist())
        return {lab: int(c.get(j, 0)) for j, lab in enumerate(self.labels)}


def validate_label_order(label_order: Any) -> list[str] | None:
    """``options.labels``: None, or a list of distinct strings (any order)."""
    if label_order is None:
        return None
    if (not isinstance(label_order, list) or not all(isinstance(v, str) for v in label_order)
            or len(set(label_order)) != len(label_order)):
        raise InvalidExamples("options.labels must be a list of distinct label strings")
    return label_order


def check_example_rows(examples: list[Any], limits: Limits, field: str = "examples"
                       ) -> tuple[list[Any], list[list[str]], bool | None]:
    """Each example on its own: an object with an item of the deployment's modality (a text,
    an image) and exactly one of label / labels. Returns the items as the modality reads
    them, each row's labels, and whether they are multi-label (None: no rows)."""
    m = get_modality(limits.modality)
    per_row: list[list[str]] = []
    multi = None
    for i, ex in enumerate(examples):
        where = f"{field}[{i}]"
        if not isinstance(ex, dict):
            raise InvalidExamples(f"{where} must be an object with \"{m.field}\" and \"label\" (or \"labels\")")
        unknown = set(ex) - {m.field, "label", "labels"}
        sent = next((k for k in unknown if k in MODALITIES), None)
        if sent is not None:
            raise wrong_modality(where, sent, m)
        if unknown:
            raise InvalidExamples(f"{where} has unknown field(s) {sorted(unknown)}; allowed: "
                                  f"{m.field}, label, labels")
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
    # items last: labels are cheap to check, images are not (decoded once all are bounded)
    items = m.read(examples, field, limits, examples=True)
    return items, per_row, multi


def validate_examples(examples: Any, limits: Limits, label_order: Sequence[str] | None = None,
                      described: Sequence[str] = ()) -> LabeledData:
    """Check the posted examples and turn them into items + label ids. The label set is the
    examples' labels and the ``described`` ones (labels with a description but no example
    yet), in ``label_order`` if given, else sorted."""
    label_order = validate_label_order(label_order)
    if not isinstance(examples, list) or not examples:
        raise InvalidExamples("examples must be a non-empty list of {\"text\", \"label\"} objects")
    if len(examples) > limits.max_examples:
        raise TooLarge(f"{len(examples)} examples posted; the limit is {limits.max_examples} per "
                       "adapter (TAILOR_MAX_EXAMPLES)")
    items, per_row, multi = check_example_rows(examples, limits)

    seen = sorted({lab for labs in per_row for lab in labs} | set(described))
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
                                  "(or a label description) for every label listed in options.labels")
        extra = [lab for lab in seen if lab not in label_order]
        if extra:
            which = "label_descriptions describe" if set(extra) <= set(described) else "examples use"
            raise InvalidExamples(f"{which} label(s) {extra} that are not in options.labels")
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
        y = np.zeros((len(items), len(labels)), dtype=np.int64)
        for i, labs in enumerate(per_row):
            for lab in labs:
                y[i, index[lab]] = 1
        always = [lab for j, lab in enumerate(labels) if y[:, j].all()]
        if always:
            raise InvalidExamples(f"label(s) {always} are on every example; a multi-label adapter "
                                  "needs examples without each label too")
    else:
        y = np.array([index[labs[0]] for labs in per_row], dtype=np.int64)
    return LabeledData(items, labels, y, bool(multi))


# -- what users have beyond labeled examples ----------------------------------------------------
def validate_descriptions(descriptions: Any, limits: Limits) -> dict[str, str]:
    """``label_descriptions``: {label: a sentence saying what it means}."""
    if descriptions is None:
        return {}
    if not isinstance(descriptions, dict):
        raise InvalidExamples("label_descriptions must be an object mapping each label to a "
                              "sentence that says what it means")
    if len(descriptions) > limits.max_labels:
        raise InvalidExamples(f"{len(descriptions)} label descriptions posted; the limit is "
                              f"{limits.max_labels} labels per adapter (TAILOR_MAX_LABELS)")
    return {_label_text(lab, f"label_descriptions key {shorten(lab)}", limits):
            validate_text(text, f"label_descriptions[{shorten(lab)}]", limits)
            for lab, text in descriptions.items()}


def validate_text_list(texts: Any, field: str, limit: int, setting: str, limits: Limits,
                       required: bool = False) -> list[str]:
    """A list of distinct texts (``unlabeled``, a suggest pool): each checked like an input,
    at most ``limit`` of them, no repeats (a repeat counts twice in every estimate)."""
    if texts is None and not required:
        return []
    if not isinstance(texts, list) or (required and not texts):
        raise InvalidExamples(f"{field} must be a {'non-empty ' if required else ''}list of texts")
    if len(texts) > limit:
        raise TooLarge(f"{len(texts)} texts in {field}; the limit is {limit} ({setting}). Send a "
                       "sample of them")
    out = [validate_text(t, f"{field}[{i}]", limits) for i, t in enumerate(texts)]
    first: dict[str, int] = {}
    for i, t in enumerate(out):
        j = first.setdefault(t, i)
        if j != i:
            raise InvalidExamples(f"{field}[{i}] repeats {field}[{j}]; send each text once")
    return out


def validate_unlabeled(texts: Any, limits: Limits) -> list[str]:
    return validate_text_list(texts, "unlabeled", limits.max_unlabeled, "TAILOR_MAX_UNLABELED",
                              limits)


def validate_training_data(examples: Any, descriptions: dict[str, str], limits: Limits,
                           label_order: Sequence[str] | None = None) -> LabeledData:
    """Examples, or none at all when every label has a description (zero-shot). A label may
    have examples, a description or both; with ``options.labels``, a description of a label
    not listed there is refused."""
    label_order = validate_label_order(label_order)
    if examples is None or examples == []:
        if not descriptions:
            raise InvalidExamples("post labeled examples, or label_descriptions for every label "
                                  "(a zero-shot adapter); both are empty")
        labels = list(label_order) if label_order is not None else sorted(descriptions)
        missing = [lab for lab in labels if lab not in descriptions]
        if missing:
            raise InvalidExamples(f"a zero-shot adapter needs a description for every label; "
                                  f"label(s) {missing} have none (label_descriptions)")
        extra = [lab for lab in descriptions if lab not in labels]
        if extra:
            raise InvalidExamples(f"label_descriptions describe label(s) {extra} that are not in "
                                  "options.labels")
        if len(labels) < 2:
            raise InvalidExamples("a classifier needs at least 2 labels; label_descriptions has "
                                  f"{len(labels)}")
        return LabeledData([], labels, np.zeros(0, dtype=np.int64), False)
    return validate_examples(examples, limits, label_order, described=list(descriptions))
