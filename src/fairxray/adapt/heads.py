"""Classification heads on image features.

``paper_linear`` and ``paper_mlp`` are the heads of the paper's released code (hidden width 1024
there): two stacked linears without a non-linearity (linear probing, and the head of LoRA and full
fine-tuning), and linear -> BatchNorm -> ReLU -> linear (MLP). ``linear`` is a plain linear
classifier, the textbook linear probe. The two stacked linears are a linear map too, only
over-parameterised, which changes the optimisation but not what the head can represent.
"""

from __future__ import annotations

from torch import nn

HEADS = ("paper", "linear")


def paper_linear(in_dim: int, hidden: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Linear(hidden, n_classes))


def paper_mlp(in_dim: int, hidden: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    )


def linear(in_dim: int, n_classes: int) -> nn.Linear:
    return nn.Linear(in_dim, n_classes)


def build_head(kind: str, in_dim: int, hidden: int, n_classes: int) -> nn.Module:
    """``kind`` is ``train.head``: "paper" (two stacked linears) or "linear"."""
    if kind == "paper":
        return paper_linear(in_dim, hidden, n_classes)
    if kind == "linear":
        return linear(in_dim, n_classes)
    raise ValueError(f"train.head must be one of {HEADS}, got {kind!r}")
