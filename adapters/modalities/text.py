"""Texts posted by clients: strings in, the same strings out (the encoder tokenizes them), or
a 4xx error naming the text.

A text must be valid Unicode (no lone surrogate), at most ``max_chars`` characters
(``TAILOR_MAX_CHARS``) and show something: only whitespace, zero-width or control characters
is nothing to classify. The same checks apply to every text a client sends, whatever the
deployment's modality reads: label descriptions and unlabeled texts (validation.py) use
``validate_text`` too.
"""
from __future__ import annotations

import unicodedata
from typing import Any

from ..errors import InvalidExamples, TooLarge
from .base import MODALITIES, Modality, get_modality, register_modality, wrong_modality

# Characters that show nothing: control, format (zero-width, bidi marks) and separators.
_INVISIBLE = ("Cc", "Cf", "Zl", "Zp", "Zs")


def check_unicode(v: str, where: str) -> None:
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


def blank(v: str) -> bool:
    """Only whitespace, zero-width or control characters: nothing to classify or show."""
    return not any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE for ch in v)


def validate_text(text: Any, where: str, limits: Any) -> str:
    """One text (``limits``: ``validation.Limits``). An object carrying another modality's
    item (``{"image": ...}``) sent to a text field is named as that modality."""
    if isinstance(text, dict) and set(text) - {"text", "label", "labels"}:
        sent = next((k for k in text if k in MODALITIES and k != TEXT.name), None)
        if sent is not None and sent != limits.modality:
            raise wrong_modality(where, sent, get_modality(limits.modality))
    if not isinstance(text, str):
        raise InvalidExamples(f"{where} must be a string, got {type(text).__name__}")
    if len(text) > limits.max_chars:
        raise TooLarge(f"{where} has {len(text)} characters; the limit is {limits.max_chars} "
                       "(TAILOR_MAX_CHARS). Shorten or split the text")
    if blank(text):
        raise InvalidExamples(f"{where} is empty (only whitespace or invisible characters); "
                              "every text needs some words")
    check_unicode(text, where)
    return text


def read_texts(items: list[Any], where: str, limits: Any, *, examples: bool = False
               ) -> list[str]:
    """The text modality's reader: strings (or example objects carrying ``text``)."""
    if examples:
        return [validate_text(ex.get("text"), f"{where}[{i}].text", limits)
                for i, ex in enumerate(items)]
    return [validate_text(t, f"{where}[{i}]", limits) for i, t in enumerate(items)]


TEXT = register_modality(Modality(
    "text", "text", read_texts, "strings (texts)", in_words=True, cheap_to_read=True, bare=True,
    example_doc="the example text (text backbones)"))
