"""``group_dro``: online group weights on the worst-group loss (Sagawa et al., ICLR 2020,
Algorithm 1), groups = the values of ``mitigate.attribute``.

Per batch, with ``L_g`` the mean cross-entropy of the batch rows of group ``g`` (detached for the
weight update) and step size ``eta = train.dro_step``:

    q_g <- q_g * exp(eta * L_g);  q <- q / sum(q);  loss = sum_g q_g * L_g

``q`` starts uniform. A group absent from the batch has ``L_g = 0``: its weight is not pushed up
and it adds nothing to the loss. ``q`` is part of the loop's checkpoint, so a resumed run
continues the same weights."""

from __future__ import annotations

import torch

from fairxray.mitigate.registry import Mitigation, TrainHook, register


def group_losses(ce: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean of ``ce`` over the rows of each group; 0 for a group with no row."""
    total = torch.zeros(n_groups, dtype=ce.dtype, device=ce.device).index_add(0, groups, ce)
    count = torch.bincount(groups, minlength=n_groups).to(ce.dtype)
    return total / count.clamp(min=1)


def dro_step(q: torch.Tensor, losses: torch.Tensor, eta: float) -> torch.Tensor:
    """One exponentiated-gradient step of the group weights (Sagawa et al., Algorithm 1)."""
    q = q * torch.exp(eta * losses.detach())
    return q / q.sum()


class GroupDROHook(TrainHook):
    def __init__(self, n_groups: int, eta: float) -> None:
        self.n_groups = n_groups
        self.eta = eta
        self.q = torch.full((n_groups,), 1.0 / n_groups)

    def to(self, device) -> GroupDROHook:
        self.q = self.q.to(device)
        return self

    def loss(self, ce, groups, labels, logits):
        losses = group_losses(ce, groups, self.n_groups)
        self.q = dro_step(self.q, losses, self.eta)
        return (self.q * losses).sum()

    def state_dict(self) -> dict:
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.q = state["q"].to(self.q.device)


def make_hook(hp, n_groups, n_classes, train_groups, train_labels) -> GroupDROHook:
    return GroupDROHook(n_groups, hp.dro_step)


register(
    Mitigation(
        "group_dro",
        "train",
        "GroupDRO: exponentiated weights on the worst sensitive group's loss (train.dro_step)",
        hyperparameters=("dro_step",),
        make_hook=make_hook,
    )
)
