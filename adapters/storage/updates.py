"""Continual updates: what the next version of an adapter is trained on (the latest
version's inputs plus the new ones) and what changed, for the record.

Pure functions over ``Inputs``; the facade loads the old inputs from the store, builds the
next version through the one create path and publishes it with these changes (the quality
estimates before and after come from each kind's metrics model, ``kinds/metrics.py``).
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidExamples, TooLarge
from ..validation import (Limits, check_example_rows, validate_descriptions,
                          validate_unlabeled)
from .manifest import Inputs

def _labels_of(examples: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for ex in examples:
        for lab in ([ex["label"]] if ex.get("label") is not None else ex.get("labels") or []):
            if lab not in seen:
                seen.append(lab)
    return seen


def merge_inputs(old: Inputs, examples: Any, descriptions: Any, unlabeled: Any,
                 limits: Limits, multi_label: bool) -> tuple[Inputs, dict[str, Any]]:
    """The old inputs plus the new ones, and a summary of what changed. The new parts are
    checked on their own first (errors name their own indices); the whole is checked again by
    the create path."""
    examples = [] if examples is None else examples
    if not isinstance(examples, list):
        raise InvalidExamples("examples must be a list of {\"text\", \"label\"} objects")
    _, _, multi = check_example_rows(examples, limits)
    if multi is not None and multi != multi_label:
        form = "\"labels\" lists (multi-label)" if multi_label else "one \"label\" each (single-label)"
        raise InvalidExamples(f"this adapter's examples have {form}; the new examples must too")
    new_desc = validate_descriptions(descriptions, limits)
    new_unlabeled = validate_unlabeled(unlabeled, limits)
    if not examples and not new_desc and not new_unlabeled:
        raise InvalidExamples("nothing to add: post examples, label_descriptions or unlabeled texts")
    known = set(old.unlabeled)
    fresh = [t for t in new_unlabeled if t not in known]
    if len(old.unlabeled) + len(fresh) > limits.max_unlabeled:
        raise TooLarge(f"the adapter would have {len(old.unlabeled) + len(fresh)} unlabeled texts; "
                       f"the limit is {limits.max_unlabeled} (TAILOR_MAX_UNLABELED). Send fewer")
    old_labels = set(_labels_of(old.examples)) | set(old.label_descriptions)
    merged = Inputs(examples=[*old.examples, *examples],
                    label_descriptions={**old.label_descriptions, **new_desc},
                    unlabeled=[*old.unlabeled, *fresh])
    changes = {
        "examples_added": len(examples),
        "new_labels": [lab for lab in [*_labels_of(examples), *new_desc] if lab not in old_labels],
        "label_descriptions_added": sorted(k for k in new_desc if k not in old.label_descriptions),
        "label_descriptions_changed": sorted(k for k, v in new_desc.items()
                                             if k in old.label_descriptions
                                             and old.label_descriptions[k] != v),
        "unlabeled_added": len(fresh),
    }
    changes["new_labels"] = list(dict.fromkeys(changes["new_labels"]))
    return merged, changes
