"""Export targets, registered by adapter kind (cf. optimum ``register_tasks_manager_onnx``).

A target turns a stored adapter version into a PyTorch module built on a FRESH copy of the
backbone, plus the OnnxConfig that describes its graph. ``head``: the copy + the head.
``lora``: the copy with each LoRA update merged into its weight (W += scaling * B @ A, what
peft's ``merge_and_unload`` does), + the head. The served backbone is never touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from adapters.backbone import Backbone
from adapters.errors import InvalidRequest
from adapters.heads import LinearHead
from adapters.lora import LoraSpec, LoraWeights
from adapters.store import StoredAdapter

from .graph import Classifier, fresh_encoder
from .onnx_config import CLASSIFIER, OnnxConfig


@dataclass(frozen=True)
class ExportTarget:
    kind: str
    config: OnnxConfig
    build: Callable[[Backbone, StoredAdapter], nn.Module]


EXPORT_TARGETS: dict[str, ExportTarget] = {}


def register_export_target(kind: str, config: OnnxConfig
                           ) -> Callable[[Callable[[Backbone, StoredAdapter], nn.Module]],
                                         Callable[[Backbone, StoredAdapter], nn.Module]]:
    def deco(build: Callable[[Backbone, StoredAdapter], nn.Module]):
        EXPORT_TARGETS[kind] = ExportTarget(kind, config, build)
        return build
    return deco


def target_for(kind: str) -> ExportTarget:
    try:
        return EXPORT_TARGETS[kind]
    except KeyError:
        raise InvalidRequest(f"adapters of kind {kind!r} cannot be exported yet; exportable kinds: "
                             f"{', '.join(sorted(EXPORT_TARGETS))}") from None


def head_of(stored: StoredAdapter) -> LinearHead:
    activation = "sigmoid" if stored.manifest.get("multi_label") else "softmax"
    return LinearHead.from_tensors(stored.tensors, activation)


@register_export_target("head", CLASSIFIER)
def build_head(backbone: Backbone, stored: StoredAdapter) -> nn.Module:
    """Frozen backbone (copied) + mean pooling + L2 norm + the adapter's linear head."""
    return Classifier(fresh_encoder(backbone), head_of(stored)).eval()


@register_export_target("lora", CLASSIFIER)
def build_lora(backbone: Backbone, stored: StoredAdapter) -> nn.Module:
    """A copy of the backbone with the adapter's LoRA merged into its weights + its head.
    The merged graph has exactly the backbone's shape: no extra MatMuls at inference."""
    import torch

    weights = LoraWeights.from_tensors(stored.tensors, LoraSpec.from_dict(stored.manifest["lora"]))
    encoder = fresh_encoder(backbone)
    modules = dict(encoder.model.named_modules())
    with torch.no_grad():
        for name in weights.a:
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                raise InvalidRequest(f"adapter {stored.manifest['name']}@{stored.manifest['version']}: "
                                     f"LoRA module {name!r} is not a Linear layer of this backbone")
            module.weight += weights.delta_weight(name).to(module.weight.dtype)
    return Classifier(encoder, head_of(stored)).eval()
