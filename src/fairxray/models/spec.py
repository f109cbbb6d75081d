"""What the registry holds: :class:`ModelSpec` (one per model name), its :class:`ImageSpec`
(preprocessing) and :class:`WeightsStatus` (what is on disk). Plain data, importing nothing of the
model code, so families, preprocessing and weight checks all depend on it and not on each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESIZE_RULES = ("shortest+center_crop", "pad_square", "stretch")
INTERPOLATIONS = ("bicubic", "bilinear")
VALUE_RANGES = ("0-1", "0-255")
# `model_scale`: "full" = the published architecture (random or loaded weights); "tiny" = the
# same upstream classes at random init with a few narrow layers and a small native image size,
# so the demo graph runs every family on a CPU. Never loaded from weights.
MODEL_SCALES = ("full", "tiny")


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to turn cached uint8 grayscale pixels into the network's input."""

    size: int  # square side fed to the network
    resize: str  # "shortest+center_crop" | "pad_square" | "stretch"
    pre_size: int | None  # resize to this, then center-crop `size` (GLoRIA: 256 -> 224)
    interpolation: str  # "bicubic" | "bilinear"
    in_channels: int  # 1 or 3 (grayscale cache pixels are repeated)
    mean: tuple[float, ...]  # one per channel, on the `value_range` scale
    std: tuple[float, ...]
    value_range: str  # "0-1" | "0-255": the scale pixels are on before mean/std

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"ImageSpec.resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"ImageSpec.interpolation must be one of {INTERPOLATIONS}")
        if self.value_range not in VALUE_RANGES:
            raise ValueError(f"ImageSpec.value_range must be one of {VALUE_RANGES}")
        if self.in_channels not in (1, 3):
            raise ValueError("ImageSpec.in_channels must be 1 or 3")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError("ImageSpec.mean/std need one value per input channel")
        if self.pre_size is not None and self.pre_size < self.size:
            raise ValueError("ImageSpec.pre_size must be at least size (it is cropped to size)")


@dataclass(frozen=True)
class LoraSpec:
    """Where LoRA goes in a family's image tower and how strongly it acts, as the paper's released
    code ran it (``train.lora_config: model``). The released code added ``scale * B @ A`` with
    scale 1 (alpha 1 on the ViT attention in-projection at rank 16; no scaling at all on the
    ResNet convs at rank 4). peft multiplies by ``alpha / rank``, so fairxray passes
    ``alpha = scale * rank`` to get exactly ``scale``.

    ``targets`` are peft ``target_modules`` (one regex, or name suffixes) relative to
    ``ClipModel.vision``; ``parameters`` are peft ``target_parameters`` (an ``nn.Parameter`` adapted
    directly). The fused ``in_proj_weight`` of ``nn.MultiheadAttention`` needs the latter: targeting
    the module makes peft adapt ``out_proj`` too, which the released code did not.
    """

    targets: tuple[str, ...] | str  # peft target_modules; () when only `parameters` are adapted
    rank: int  # the released code's rank for this tower
    scale: float  # multiplier of B @ A (1.0 in the released code)
    parameters: tuple[str, ...] = ()  # peft target_parameters, e.g. ("in_proj_weight",)
    source: str = ""  # why these targets: the released code, or the closest analogue of it

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("LoraSpec.rank must be at least 1")
        if self.scale <= 0:
            raise ValueError("LoraSpec.scale must be positive")
        if not self.targets and not self.parameters:
            raise ValueError("LoraSpec needs targets or parameters")


@dataclass(frozen=True)
class TinySpec:
    """A family's ``model_scale: tiny`` build: the same upstream classes, randomly initialised,
    with a few narrow layers (text tower too; tokenizers unchanged) at ``image_size`` px.
    ``build`` takes the tiny-scale spec (:meth:`ModelSpec.at_scale`) and returns the model."""

    build: Callable[[Any], Any]  # tiny ModelSpec -> ClipModel, random init
    image_size: int  # native square input of the tiny tower
    embed_dim: int  # joint space of the tiny towers
    feature_dim: int | None  # pre-projection feature size (None = not exposed)
    config: str  # what the tiny build is, for the manifests (e.g. "2 layers x 64 wide")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key, e.g. "medclip-vit"
    family: str  # loader family, e.g. "openclip_openai", "medclip", "toy"
    build: Callable[
        [Path | None], Any
    ]  # -> ClipModel; None = random init offline, a folder = strict load
    weight_files: tuple[str, ...]  # expected under <weights_dir>/<name>/
    sha256: dict[str, str]  # file -> known upstream hash ("" where unknown)
    source: str  # download URL / page
    license: str
    image: ImageSpec
    embed_dim: int  # joint image-text space
    prompt_style: str  # a key of fairxray.adapt.zero_shot.PROMPT_SETS
    # peft target_modules relative to ClipModel.vision, used when `lora` is None (a family that
    # declares no paper LoRA settings: only `train.lora_config: train` is then available).
    lora_targets: tuple[str, ...] | str
    notes: str = ""
    feature_dim: int | None = None  # pre-projection image feature size (None = not exposed)
    text_context: int = 77  # tokens per prompt
    random_vocab_note: str = ""  # how the random build's tokenizer differs from the real one
    # The paper's LoRA for this family (targets, rank, scale); its targets are also used by the
    # `train` and `equal_budget` modes of `train.lora_config`, so every mode adapts the same
    # modules. None: `lora_targets` only, no paper settings.
    lora: LoraSpec | None = None
    # Zero-shot: the prompt set's source and the rule that turns similarities into class scores
    # (a key of fairxray.adapt.zero_shot.ZERO_SHOT_RULES; "" = the default softmax over cosines).
    zero_shot: str = ""
    text_tower: bool = True  # False: image-only (RAD-DINO), the zero_shot method refuses it
    tiny: TinySpec | None = None  # how `model_scale: tiny` builds it
    scale: str = "full"  # the model_scale this spec describes (see at_scale)

    def at_scale(self, scale: str) -> ModelSpec:
        """This spec at ``scale``: "tiny" swaps in the tiny build's image size (``pre_size``
        scaled with it), joint and feature dimensions, and says so in ``notes``."""
        if scale not in MODEL_SCALES:
            raise ValueError(f"model_scale must be one of {MODEL_SCALES}, got {scale!r}")
        if scale == self.scale:
            return self
        if self.scale != "full" or self.tiny is None:
            raise ValueError(f"model {self.name!r} has no {scale} build")
        t, im = self.tiny, self.image
        pre = None if im.pre_size is None else round(im.pre_size * t.image_size / im.size)
        return dataclasses.replace(
            self,
            image=dataclasses.replace(im, size=t.image_size, pre_size=pre),
            embed_dim=t.embed_dim,
            feature_dim=t.feature_dim,
            notes=f"TINY random build ({t.config}, {t.image_size} px) of: {self.notes}",
            scale=scale,
        )


@dataclass(frozen=True)
class WeightsStatus:
    name: str
    folder: Path | None
    present: bool  # every expected file exists
    valid: bool  # present and every known sha256 matches
    problems: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # file -> "ok" | "unknown-hash" | ...
