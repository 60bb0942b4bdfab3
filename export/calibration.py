"""What int8 backbones are calibrated on: a fixed, packaged sample of texts (the same scales on
every machine), one unpadded text per run, and which MatMuls of a plain fp32 export carry a
Linear's weights. Shared by the static QDQ recipe (static_int8.py) and the per-token one
(int8_rows.py)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def calibration_texts() -> list[str]:
    """The fixed calibration sample, packaged with the code (the same scales everywhere):
    export/sample.py's 102 held-out texts of every register, disjoint from the sample the
    runtime choice judges accuracy and invariance on (so its gate is not flattered)."""
    from .sample import HELDOUT_TEXTS

    return list(HELDOUT_TEXTS)


def row_feeds(encoder: Any, texts: Sequence[str], inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One feed per text (no padding), with the graph's input names."""
    out = []
    for row in encoder.prepare(list(texts)):
        feed = encoder.collate_np([row])
        out.append({k: feed[k] for k in inputs if k in feed})
    return out


def weight_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose second input is an initializer (a Linear's weight)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


__all__ = ["calibration_texts", "row_feeds", "weight_matmuls"]
