"""What a modality is, and the registry every modality registers in once (like
``kinds.base.AdapterKind``).

A modality is one module under adapters/modalities/ that declares a ``Modality``: the key an
item travels under (``{"text": ...}``, ``{"image": ...}``), its reader (the raw items of one
request -> what the encoder's ``prepare`` takes, or a 4xx error naming the item), how an item
looks (for error messages) and its capabilities. The deployment's modality is its encoder's
(``Encoder.modality``); validation, the engine and the API ask the registry, never compare
names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidExamples


class Reader(Protocol):
    def __call__(self, items: list[Any], where: str, limits: Any, *, examples: bool = False
                 ) -> list[Any]:
        """The items of ONE request (``inputs``, or example objects when ``examples``) -> model
        inputs, in order. ``where``: the request field for messages ("inputs", "examples");
        ``limits``: ``validation.Limits``. A reader sees the whole request at once, so that it
        can bound the request as a whole (e.g. decoded pixels) before any costly work."""
        ...


@dataclass(frozen=True)
class Modality:
    name: str  # what ``Encoder.modality`` says
    field: str  # the key of an example (and of an object input) that holds the item
    read: Reader
    shape: str  # how one item looks, for error messages ("strings (texts)")
    # items are words: label descriptions (zero-shot), unlabeled texts and suggest pools are
    # items of this modality; otherwise a create takes labeled examples only
    in_words: bool = False
    # reading costs microseconds: the async path reads on the event loop; otherwise (decoding)
    # in a thread
    cheap_to_read: bool = False
    # The HTTP contract (service/schemas.py builds the item and example models from these):
    # the JSON type of an item's value, whether an input may be that value bare (a text is a
    # string; an image is an object {"image": ...}), and what the field holds.
    value: Any = str
    bare: bool = False
    example_doc: str = ""  # the example's field: "the example text (text backbones)"
    item_doc: str = ""  # an object input's field (not bare)

    def article(self) -> str:
        """"a" or "an" before the name, for messages."""
        return "an" if self.name[:1] in "aeiou" else "a"


MODALITIES: dict[str, Modality] = {}


def register_modality(m: Modality) -> Modality:
    if m.name in MODALITIES:
        raise ValueError(f"modality {m.name!r} is registered twice")
    MODALITIES[m.name] = m
    return m


def get_modality(name: str) -> Modality:
    """The registered modality ``name`` (an encoder's ``modality``); a ValueError at start-up
    for a backbone whose modality has no reader."""
    m = MODALITIES.get(name)
    if m is None:
        raise ValueError(f"no reader for {name!r} items (known modalities: "
                         f"{', '.join(MODALITIES)}): register one (adapters/modalities/)")
    return m


def wrong_modality(where: str, sent: str, serving: Modality) -> InvalidExamples:
    """422 for an item of another modality (``sent``) than the deployment's."""
    article = "" if get_modality(sent).in_words else get_modality(sent).article() + " "
    return InvalidExamples(f"{where} is {article}{sent}, but this deployment serves "
                           f"{serving.article()} {serving.name} backbone: send {serving.shape}")


def refuse_other_modality(item: Any, where: str, serving: Modality) -> None:
    """422 (``wrong_modality``) when ``item`` is an item of another registered modality than
    ``serving``: a bare value of a bare modality (a string: a text) or an object carrying
    another modality's field and not ``serving``'s. Every non-bare reader asks this first, so
    a client learns what the deployment reads, whichever modality it sent."""
    for m in MODALITIES.values():
        if m is serving:
            continue
        if (m.bare and isinstance(item, m.value)) or (
                isinstance(item, dict) and m.field in item and serving.field not in item):
            raise wrong_modality(where, m.name, serving)
