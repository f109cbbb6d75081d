"""Adaptation methods by name: zero_shot, linear_probe, mlp, lora, full_ft.

A :class:`Method` says what it trains on (``inputs``: nothing, cached embeddings or images) and
builds the trainable module. Every built module maps its inputs to class logits and exposes
``param_groups(hp)`` for the optimiser; image modules also expose ``preprocess`` (the model's
own pipeline) so the trainer can augment uint8 pixels first.

What each method holds fixed:

- ``linear_probe``, ``mlp``: the whole backbone (trained on cached embeddings; the backbone never
  runs, so neither its weights nor its BatchNorm statistics can drift, unlike the paper's code).
- ``lora``: every backbone weight and buffer (targets, rank and scale: ``train.lora_config``,
  see :mod:`fairxray.adapt.lora`); BatchNorm layers of the backbone stay in eval mode
  so their running statistics are buffers that do not move either. Dropout stays active.
- ``full_ft``: nothing; the backbone may get a lower learning rate (``backbone_lr_scale``).

Head input: the image tower's output (``ClipModel.vision``, the unnormalised joint-space
embedding), the same quantity the ``embed`` stage caches, so a head trained on the cache and a
head trained end to end see the same features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from fairxray.adapt import heads
from fairxray.adapt.lora import apply_lora, lora_settings
from fairxray.errors import UserError

if TYPE_CHECKING:
    from fairxray.config import TrainParams
    from fairxray.models.base import ClipModel

INPUTS = ("none", "embeddings", "images")


class HeadClassifier(nn.Module):
    """A head on cached features: ``[B, D]`` float -> ``[B, C]`` logits."""

    inputs = "embeddings"

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def param_groups(self, hp: TrainParams) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": hp.lr}]


class ImageClassifier(nn.Module):
    """Image tower + head: preprocessed ``[B, C, S, S]`` -> ``[B, C]`` logits.

    ``freeze_norm`` keeps the backbone's normalisation layers in eval mode whatever ``train()``
    says, so frozen BatchNorm statistics stay fixed (the paper's code let them drift)."""

    inputs = "images"

    def __init__(
        self,
        vision: nn.Module,
        head: nn.Module,
        preprocess: Callable[[torch.Tensor], torch.Tensor],
        *,
        freeze_norm: bool,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.head = head
        self.preprocess = preprocess
        self.freeze_norm = freeze_norm
        self.backbone_lr_scale = backbone_lr_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision(images))

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if mode and self.freeze_norm:
            for m in self.vision.modules():
                if isinstance(m, nn.modules.batchnorm._NormBase):
                    m.eval()
        return self

    def param_groups(self, hp: TrainParams) -> list[dict]:
        backbone = [p for p in self.vision.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": hp.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": hp.lr * self.backbone_lr_scale})
        return groups


@dataclass(frozen=True)
class Method:
    name: str
    inputs: str  # "none" | "embeddings" | "images"
    description: str
    # (model, in_dim, n_classes, hp) -> trainable module; None for methods that do not train
    build: Callable[[ClipModel | None, int, int, TrainParams], nn.Module] | None


def _linear_probe(model, in_dim, n_classes, hp) -> nn.Module:
    return HeadClassifier(heads.build_head(hp.head, in_dim, hp.head_hidden, n_classes))


def _mlp(model, in_dim, n_classes, hp) -> nn.Module:
    return HeadClassifier(heads.paper_mlp(in_dim, hp.head_hidden, n_classes))


def _need_model(model, name: str) -> ClipModel:
    if model is None:
        raise ValueError(f"method {name!r} adapts the image tower and needs a model")
    return model


def _lora(model, in_dim, n_classes, hp) -> nn.Module:
    model = _need_model(model, "lora")
    model.requires_grad_(False)
    settings = lora_settings(model.spec, hp, model.vision)
    vision = apply_lora(model.vision, settings, dropout=hp.lora_dropout)
    head = heads.build_head(hp.head, in_dim, hp.head_hidden, n_classes)
    return ImageClassifier(vision, head, model.preprocess, freeze_norm=True)


def _full_ft(model, in_dim, n_classes, hp) -> nn.Module:
    model = _need_model(model, "full_ft")
    model.vision.requires_grad_(True)
    head = heads.build_head(hp.head, in_dim, hp.head_hidden, n_classes)
    return ImageClassifier(
        model.vision,
        head,
        model.preprocess,
        freeze_norm=False,
        backbone_lr_scale=hp.backbone_lr_scale,
    )


_METHODS = {
    m.name: m
    for m in (
        Method("zero_shot", "none", "image-text similarity of the pretrained model", None),
        Method(
            "linear_probe",
            "embeddings",
            "frozen backbone, train.head on cached embeddings",
            _linear_probe,
        ),
        Method("mlp", "embeddings", "frozen backbone, linear-BatchNorm-ReLU-linear head", _mlp),
        Method(
            "lora",
            "images",
            "peft LoRA on the model's LoRA targets (train.lora_config) + train.head",
            _lora,
        ),
        Method("full_ft", "images", "every image-tower weight trainable + train.head", _full_ft),
    )
}


def list_methods() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> Method:
    """The method of ``name``; a mitigated run ``<method>+<mitigation>`` gives its method."""
    from fairxray.mitigate import split_run

    base, _ = split_run(name)
    try:
        return _METHODS[base]
    except KeyError:
        raise UserError(f"method '{base}': unknown; known methods: {', '.join(_METHODS)}") from None


def check_grid(models: Sequence[str], methods: Sequence[str]) -> None:
    """Refuse, before any work, every model x method pair that cannot run: zero_shot (a method
    reading no inputs) with an image-only model (``ModelSpec.text_tower`` False, e.g. RAD-DINO)."""
    from fairxray.models import get_spec

    text_methods = [m for m in methods if get_method(m).inputs == "none"]
    image_only = [n for n in models if not get_spec(n).text_tower]
    if text_methods and image_only:
        raise UserError(
            f"models {image_only} are image-only (no text tower): {text_methods} cannot run on "
            "them; drop zero_shot from `methods` or these models from `models` (the DVC grid "
            "crosses every model with every method)"
        )


def build(
    name: str,
    *,
    n_classes: int,
    hp: TrainParams,
    model: ClipModel | None = None,
    in_dim: int | None = None,
) -> nn.Module | None:
    """The trainable module of method ``name`` (``None`` for zero_shot). Image methods adapt
    ``model.vision`` in place: pass a fresh model per call. Call under a fixed seed: the head's
    initialisation draws from torch's global generator."""
    method = get_method(name)
    if method.build is None:
        return None
    if in_dim is None:
        in_dim = _need_model(model, name).spec.embed_dim
    return method.build(model, in_dim, n_classes, hp)


def count_trainable(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
