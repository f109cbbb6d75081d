"""LoRA through peft on the modules a model declares (``ModelSpec.lora``, else ``lora_targets``).

``train.lora_config`` picks the rank and scale (:func:`lora_settings`); the targets are always the
model's, so every mode adapts the same modules:

- ``model``: the model's own :class:`~fairxray.models.spec.LoraSpec`, i.e. the paper's released
  code: rank 16 on the ViT attention in-projection and rank 4 on the ResNet bottleneck convs, the
  update ``B @ A`` added with scale 1 (peft's ``alpha / rank`` would give 1/16 at alpha 1, rank 16).
- ``train``: ``train.lora_rank`` and the peft scale ``train.lora_alpha / train.lora_rank`` for
  every model (what tuning searches).
- ``equal_budget``: the rank per model whose adapter holds as close to ``train.lora_budget``
  parameters as an integer rank allows (the adapter size is linear in the rank), scale from the
  model's spec. The released ranks give CLIP/BiomedCLIP 589,824 and the ResNets 294,144 adapter
  parameters: a comparison across families at the released ranks is not like for like.

The paper's released ViT LoRA wrote the low-rank update into ``in_proj_weight.data``, which cuts it
out of autograd: its LoRA matrices never received a gradient and "LoRA" trained like a linear
probe. Here peft adds the low-rank branch to the forward pass, so the matrices are leaves of the
graph; :func:`lora_gradient_problems` and :func:`unchanged_lora` let tests and the trainer catch
the released failure (no gradient, or weights that never move).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from fairxray.errors import UserError

if TYPE_CHECKING:
    from fairxray.config import TrainParams
    from fairxray.models.spec import ModelSpec

ADAPTER = "default"
LORA_CONFIGS = ("model", "train", "equal_budget")


@dataclass(frozen=True)
class LoraSettings:
    """What :func:`apply_lora` injects: peft targets, rank and the multiplier of ``B @ A``."""

    targets: tuple[str, ...] | str
    parameters: tuple[str, ...]
    rank: int
    scale: float
    mode: str  # the train.lora_config it came from

    @property
    def alpha(self) -> float:
        return self.scale * self.rank  # peft scales by alpha / rank


def lora_settings(
    spec: ModelSpec, hp: TrainParams, vision: nn.Module | None = None
) -> LoraSettings:
    """Resolve ``train.lora_config`` for one model (``vision`` is needed for ``equal_budget``)."""
    mode = hp.lora_config
    if mode not in LORA_CONFIGS:
        raise UserError(f"train.lora_config: must be one of {LORA_CONFIGS}, got {mode!r}")
    ls = spec.lora
    targets = ls.targets if ls is not None else spec.lora_targets
    parameters = ls.parameters if ls is not None else ()
    if mode == "train":
        return LoraSettings(targets, parameters, hp.lora_rank, hp.lora_alpha / hp.lora_rank, mode)
    if ls is None:
        raise UserError(
            f"train.lora_config: '{mode}' needs the model's LoRA settings, but model "
            f"'{spec.name}' declares none (ModelSpec.lora); use train.lora_config: train"
        )
    if mode == "model":
        return LoraSettings(targets, parameters, ls.rank, ls.scale, mode)
    if vision is None:
        raise ValueError("equal_budget needs the image tower to count adapter parameters")
    per_rank = adapter_size(vision, LoraSettings(targets, parameters, 1, 1.0, mode))
    rank = max(1, round(hp.lora_budget / per_rank))
    return LoraSettings(targets, parameters, rank, ls.scale, mode)


def adapter_size(vision: nn.Module, settings: LoraSettings) -> int:
    """Number of LoRA parameters ``settings`` would add to ``vision`` (counted on a copy)."""
    probe = apply_lora(copy.deepcopy(vision), settings, dropout=0.0)
    return sum(p.numel() for p in lora_parameters(probe).values())


def apply_lora(module: nn.Module, settings: LoraSettings, *, dropout: float) -> nn.Module:
    return add_lora(
        module,
        settings.targets,
        rank=settings.rank,
        alpha=settings.alpha,
        dropout=dropout,
        parameters=settings.parameters,
    )


def add_lora(
    module: nn.Module,
    targets: tuple[str, ...] | list[str] | str,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    parameters: tuple[str, ...] = (),
) -> nn.Module:
    """Inject LoRA into ``module`` in place and freeze everything else in it.

    ``targets`` follows peft's ``target_modules``: a list of module-name suffixes or one regex
    matched against full names; ``parameters`` follows peft's ``target_parameters`` (a parameter
    adapted directly, ``W + scale * B @ A`` through a parametrization, so gradients reach A and B).
    ``alpha / rank`` scales the update (peft's default scaling).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise UserError(f"train.lora_rank: must be at least 1, got {rank}")
    tm = targets if isinstance(targets, str) else list(targets)
    if not tm and not parameters:
        raise UserError("lora: the model declares no LoRA target modules")
    extra = {"target_parameters": list(parameters)} if parameters else {}
    if parameters and dropout > 0:
        # peft's parameter adapters have no dropout branch; say so instead of ignoring it.
        raise UserError("train.lora_dropout: must be 0 for models whose LoRA adapts a parameter")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=tm,
        bias="none",
        **extra,
    )
    try:
        out = inject_adapter_in_model(cfg, module, adapter_name=ADAPTER)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError is a ValueError
        raise UserError(
            f"lora: target modules {targets!r} match nothing in the model ({exc})"
        ) from None
    for name, p in out.named_parameters():
        p.requires_grad_(is_lora_name(name))
    return out


def is_lora_name(name: str) -> bool:
    return ".lora_A." in f".{name}" or ".lora_B." in f".{name}"


def lora_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if is_lora_name(n)}


def lora_gradient_problems(module: nn.Module) -> list[str]:
    """After a backward pass: LoRA tensors whose gradient is missing, or all-zero where it
    cannot legitimately be. peft initialises ``lora_B`` to zero, so on the very first step only
    ``lora_B`` gets a non-zero gradient (``lora_A``'s is ``B^T`` times something); ``lora_A``
    must still have a gradient tensor. An empty list means the adapters are in the graph."""
    problems = []
    params = lora_parameters(module)
    if not params:
        return ["no LoRA parameters in the module"]
    for name, p in params.items():
        if p.grad is None:
            problems.append(f"{name}: no gradient (not in the autograd graph)")
        elif ".lora_B." in f".{name}" and not torch.any(p.grad != 0):
            problems.append(f"{name}: zero gradient")
    return problems


def unchanged_lora(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Names of LoRA tensors equal to ``before`` (a snapshot from :func:`snapshot_lora`)."""
    now = lora_parameters(module)
    return [n for n, t in before.items() if torch.equal(now[n].detach().cpu(), t)]


def snapshot_lora(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in lora_parameters(module).items()}
