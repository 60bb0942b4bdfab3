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

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidExamples, TooLarge, shorten


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


_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class FileItems:
    """How the items of a modality that travels as files (images, sounds) arrive: an object
    ``{field: "<base64 of one file>"}`` (an example adds ``label``/``labels``), a
    ``data:<field>/...;base64,`` prefix accepted. The checks every such modality makes before
    its decoder sees a byte, written once; each module declares one of these with its words:

    ``formats``: "PNG or JPEG"; ``noun``/``unit``: "the image" is about N bytes, the limit is
    M bytes per "image"; ``limit_setting`` names the byte limit; ``advice`` ends the 413."""
    field: str
    formats: str
    noun: str
    unit: str
    limit_setting: str
    advice: str

    def payload(self, item: Any, where: str, serving: Modality) -> str:
        """The base64 text of ``item``; a 422 naming what is wrong (another modality's item,
        not an object, an unknown field, a value that is not a string)."""
        f = self.field
        refuse_other_modality(item, where, serving)
        if not isinstance(item, dict) or f not in item:
            raise InvalidExamples(f'{where} must be an object {{"{f}": "<base64 {self.formats}>"}}')
        unknown = set(item) - {f, "label", "labels"}
        if unknown:
            raise InvalidExamples(f"{where} has unknown field(s) "
                                  f"{shorten(sorted(map(str, unknown)))}; allowed: {f}, label, labels")
        data = item[f]
        if not isinstance(data, str):
            raise InvalidExamples(f"{where}.{f} must be a base64 string of a {self.formats} file, "
                                  f"got {type(data).__name__}")
        return data

    def decode(self, data: str, where: str, max_bytes: int) -> bytes:
        """The file's bytes. Its size is bounded from the base64 length (4 characters per 3
        bytes) before anything is decoded: a 413 above ``max_bytes``; a 422 for text that is
        not standard base64."""
        f = self.field
        if data.startswith("data:"):
            m = re.match(rf"data:{f}/[A-Za-z0-9.+-]+;base64,", data, re.ASCII)
            if m:
                data = data[m.end():]
        if len(data) // 4 * 3 > max_bytes + 2:
            raise TooLarge(f"{where}: {self.noun} is about {len(data) // 4 * 3:,} bytes; the limit "
                           f"is {max_bytes:,} bytes per {self.unit} ({self.limit_setting}). "
                           f"{self.advice}")
        raw = data.encode("ascii", "replace").translate(None, b" \t\r\n")
        if not raw or not _B64_CHARS.fullmatch(raw) or len(raw) % 4:
            raise InvalidExamples(f"{where}.{f} is not valid base64 (standard alphabet A-Z a-z 0-9 "
                                  "+ /, '=' padding); encode the file's bytes with base64")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidExamples(f"{where}.{f} is not valid base64; encode the file's bytes "
                                  "with base64") from None

    def read(self, item: Any, where: str, serving: Modality, max_bytes: int) -> bytes:
        """``payload`` then ``decode``: one item's file bytes."""
        return self.decode(self.payload(item, where, serving), where, max_bytes)
