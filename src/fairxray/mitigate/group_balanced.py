"""``group_balanced``: loss reweighting so that every (group x class) cell of the training split
weighs the same.

Row weight ``w_i = N / (K * n_{g_i, y_i})`` (``N`` training rows, ``K`` non-empty cells,
``n_{g,y}`` rows of the cell), so each cell's weights sum to ``N / K``; the batch loss is
``sum_i w_i * ce_i / B``. Over a whole epoch every cell then pulls on the model equally, whatever
its size (the re-weighting baseline of MEDFAIR and of Sagawa et al.'s comparisons)."""

from __future__ import annotations

import numpy as np
import torch

from fairxray.mitigate.registry import Mitigation, TrainHook, register


def cell_weights(
    groups: np.ndarray, labels: np.ndarray, n_groups: int, n_classes: int
) -> np.ndarray:
    """``[n_groups, n_classes]`` weight of one row of each cell (0 for empty cells)."""
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (np.asarray(groups), np.asarray(labels)), 1)
    k = int((counts > 0).sum())
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, len(groups) / (k * counts), 0.0)
    return w


class GroupBalancedHook(TrainHook):
    def __init__(self, weights: np.ndarray) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def to(self, device) -> GroupBalancedHook:
        self.weights = self.weights.to(device)
        return self

    def loss(self, ce, groups, labels, logits):
        return (self.weights[groups, labels] * ce).sum() / len(ce)


def make_hook(hp, n_groups, n_classes, train_groups, train_labels) -> GroupBalancedHook:
    return GroupBalancedHook(cell_weights(train_groups, train_labels, n_groups, n_classes))


register(
    Mitigation(
        "group_balanced",
        "train",
        "loss reweighting: every (sensitive group x class) cell of train weighs equally",
        make_hook=make_hook,
    )
)
