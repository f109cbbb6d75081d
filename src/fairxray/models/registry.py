"""The model registry: one :class:`ModelSpec` per model name, the only place that knows models.

Each family module (``fairxray.models.<family>``) calls :func:`register` for its entries and
``fairxray.models`` imports every family. Callers ask here (``create``, ``get_spec``,
``list_models``, ``weights_status``) and never branch on model names.

Weights live in ``<weights_dir>/<name>/`` with the files named as upstream ships them
(``ModelSpec.weight_files``). ``create(name, None)`` builds the architecture randomly initialised
and offline (tests, the demo); ``create(name, weights_dir)`` checks the files (presence, sha256
where the upstream hash is known) and loads them strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairxray.errors import UserError

if TYPE_CHECKING:
    from fairxray.models.base import ClipModel

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
    build: Callable[[Path | None], ClipModel]  # None = random init offline; a folder = strict load
    weight_files: tuple[str, ...]  # expected under <weights_dir>/<name>/
    sha256: dict[str, str]  # file -> known upstream hash ("" where unknown)
    source: str  # download URL / page
    license: str
    image: ImageSpec
    embed_dim: int  # joint image-text space
    prompt_style: str  # a key of fairxray.zero_shot.PROMPT_SETS
    lora_targets: tuple[str, ...] | str  # peft target_modules, relative to ClipModel.vision
    notes: str = ""
    feature_dim: int | None = None  # pre-projection image feature size (None = not exposed)
    text_context: int = 77  # tokens per prompt
    random_vocab_note: str = ""  # how the random build's tokenizer differs from the real one


@dataclass(frozen=True)
class WeightsStatus:
    name: str
    folder: Path | None
    present: bool  # every expected file exists
    valid: bool  # present and every known sha256 matches
    problems: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # file -> "ok" | "unknown-hash" | ...


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec``; re-registering the same name with a different spec is a bug."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"model {spec.name!r} is already registered with a different spec")
    unknown_hash = set(spec.sha256) - set(spec.weight_files)
    if unknown_hash:
        raise ValueError(f"{spec.name}: sha256 given for files not in weight_files: {unknown_hash}")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which registers its entries.
    import fairxray.models  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"model '{name}': unknown; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def weights_folder(name: str, weights_dir: str | Path) -> Path:
    return Path(weights_dir) / name


def weights_status(name: str, weights_dir: str | Path | None) -> WeightsStatus:
    """Are ``<weights_dir>/<name>/``'s files present, and do their sha256 match the manifest?"""
    from fairxray.models.weights import check_files

    spec = get_spec(name)
    if weights_dir is None:
        return WeightsStatus(name, None, False, False, ["no weights_dir configured"])
    folder = weights_folder(name, weights_dir)
    return check_files(spec, folder)


def missing_weights_message(spec: ModelSpec, status: WeightsStatus) -> str:
    return (
        f"{status.folder}: weights for model '{spec.name}' not usable "
        f"({'; '.join(status.problems)}); download from {spec.source} "
        f"(licence: {spec.license}) and place {', '.join(spec.weight_files)} there"
    )


def require_weights(names: Iterable[str], weights_dir: str | Path | None) -> None:
    """One error listing every model whose weights are missing or invalid, before any work."""
    if weights_dir is None:
        raise UserError("data.weights_dir: not set; real models need a weights folder")
    bad = []
    for n in names:
        spec = get_spec(n)
        st = weights_status(n, weights_dir)
        if not st.valid:
            bad.append(missing_weights_message(spec, st))
    if bad:
        raise UserError(" | ".join(bad))


def create(name: str, weights_dir: str | Path | None = None) -> ClipModel:
    """Build model ``name``: random and offline when ``weights_dir`` is None, else strictly
    loaded from ``<weights_dir>/<name>/`` after the files are checked."""
    spec = get_spec(name)
    if weights_dir is None:
        return spec.build(None)
    status = weights_status(name, weights_dir)
    if not status.valid:
        raise UserError(missing_weights_message(spec, status))
    return spec.build(status.folder)
