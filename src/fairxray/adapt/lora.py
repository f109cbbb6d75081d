"""LoRA through peft on the modules a model declares (``ModelSpec.lora_targets``).

The paper's released ViT LoRA wrote the low-rank update into ``in_proj_weight.data``, which cuts it
out of autograd: its LoRA matrices never received a gradient and "LoRA" trained like a linear
probe. Here peft adds the low-rank branch to the forward pass, so the matrices are leaves of the
graph; :func:`lora_gradient_problems` and :func:`unchanged_lora` let tests and the trainer catch
the released failure (no gradient, or weights that never move).
"""

from __future__ import annotations

import torch
from torch import nn

from fairxray.errors import UserError

ADAPTER = "default"


def add_lora(
    module: nn.Module,
    targets: tuple[str, ...] | list[str] | str,
    *,
    rank: int,
    alpha: float,
    dropout: float,
) -> nn.Module:
    """Inject LoRA into ``module`` in place and freeze everything else in it.

    ``targets`` follows peft's ``target_modules``: a list of module-name suffixes or one regex
    matched against full names. ``alpha / rank`` scales the update (peft's default scaling).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise UserError(f"train.lora_rank: must be at least 1, got {rank}")
    tm = targets if isinstance(targets, str) else list(targets)
    if not tm:
        raise UserError("lora: the model declares no LoRA target modules")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=tm, bias="none")
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
