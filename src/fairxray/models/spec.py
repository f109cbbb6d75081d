"""What the registry holds: :class:`ModelSpec` (one per model name), its :class:`ImageSpec`
(preprocessing) and :class:`WeightsStatus` (what is on disk). Plain data, importing nothing of the
model code, so families, preprocessing and weight checks all depend on it and not on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESIZE_RULES = ("shortest+center_crop", "pad_square", "stretch")
INTERPOLATIONS = ("bicubic", "bilinear")
VALUE_RANGES = ("0-1", "0-255")


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
    lora_targets: tuple[str, ...] | str  # peft target_modules, relative to ClipModel.vision
    notes: str = ""
    feature_dim: int | None = None  # pre-projection image feature size (None = not exposed)
    text_context: int = 77  # tokens per prompt
    random_vocab_note: str = ""  # how the random build's tokenizer differs from the real one
    zero_shot: bool = True  # False: image-only (no text tower), the zero_shot method refuses it


@dataclass(frozen=True)
class WeightsStatus:
    name: str
    folder: Path | None
    present: bool  # every expected file exists
    valid: bool  # present and every known sha256 matches
    problems: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # file -> "ok" | "unknown-hash" | ...
