"""What an exported graph looks like, as data (cf. optimum ``OnnxConfig``).

An export picks one of these (an adapter's bundle: ``CLASSIFIER``; the onnxruntime runtime's
shared backbone: ``SENTENCE_ENCODER``); the exporter, the parity check and the bundle README
read names, axes, opset and tolerances from here instead of repeating them in code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# The one list of quantization modes: settings, the HTTP schema, the CLI and export read it.
Quantize = Literal["none", "int8"]
QUANTIZE_CHOICES: tuple[str, ...] = get_args(Quantize)
# An adapter's export (HTTP, CLI) also has int8-rows: the graph the onnx-int8-rows runtime
# serves, with the head (export/int8_rows.py); not a setting of the onnx runtime.
ExportQuantize = Literal["none", "int8", "int8-rows"]
EXPORT_QUANTIZE_CHOICES: tuple[str, ...] = get_args(ExportQuantize)


@dataclass(frozen=True)
class OnnxConfig:
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    outputs: tuple[str, ...] = ("probabilities", "logits")
    # input/output name -> {axis index: symbolic name}; batch and sequence are dynamic
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    opset: int = 17
    # fp32: max |onnxruntime - PyTorch| over the checked output (probabilities)
    atol: float = 1e-4
    checked_output: str = "probabilities"
    # int8: the export refuses when top-1 agreement with PyTorch fp32 falls below this
    min_int8_top1: float = 0.99
    # int8 of an embedding output: refused below this cosine to fp32 (per-channel MiniLM: min
    # ~0.96 on short odd texts like "ok", ~0.99 typical; per-tensor is far worse)
    min_int8_cosine: float = 0.95

    def __post_init__(self) -> None:
        if self.checked_output not in self.outputs:
            raise ValueError(f"checked_output {self.checked_output!r} is not one of {self.outputs}")
        if not (0 < self.atol < 1):
            raise ValueError(f"atol must be in (0, 1), got {self.atol!r}")
        if not (0 < self.min_int8_top1 <= 1):
            raise ValueError(f"min_int8_top1 must be in (0, 1], got {self.min_int8_top1!r}")
        for name in self.dynamic_axes:
            if name not in self.inputs + self.outputs:
                raise ValueError(f"dynamic axis given for unknown tensor {name!r}")


def _axes(outputs: tuple[str, ...]) -> dict[str, dict[int, str]]:
    seq = {0: "batch", 1: "sequence"}
    return {"input_ids": seq, "attention_mask": seq, **{o: {0: "batch"} for o in outputs}}


# Standalone classifier: tokens -> backbone -> mean pooling -> L2 norm -> head.
CLASSIFIER = OnnxConfig(outputs=("probabilities", "logits"),
                        dynamic_axes=_axes(("probabilities", "logits")))

# The shared backbone alone (the onnxruntime serving runtime). Not named "embedding": with
# the dynamo exporter that name collides with an internal value (DESIGN.md traps).
SENTENCE_ENCODER = OnnxConfig(outputs=("sentence_embedding",), checked_output="sentence_embedding",
                              dynamic_axes=_axes(("sentence_embedding",)))
