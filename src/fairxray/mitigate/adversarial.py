"""``adversarial``: an adversary head predicts the sensitive group from the classifier's output
through a gradient reversal layer (Ganin & Lempitsky 2015; Zhang et al., AIES 2018; Wadsworth et
al., 2018).

The adversary sees ``[softmax(logits), onehot(y)]``: with the true label as an input it can only
win on what the prediction says about the group *within* a class, the equalized-odds variant of
Zhang et al. (their section 4). The prediction is the one representation every trainable method
has (a linear probe on frozen embeddings trains nothing else). The loss is
``mean CE(logits, y) + CE(adversary(GRL(softmax(logits)), onehot(y)), g)``: the adversary's
own weights descend its loss, while the reversal layer hands the classifier ``-lambda`` times the
adversary's gradient (``lambda = train.adversary_weight``), so the classifier ascends it. One
optimiser (AdamW at ``train.lr``) steps both. The adversary is not part of the saved model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairxray.mitigate.registry import Mitigation, TrainHook, register


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-weight``."""
    return _Reverse.apply(x, weight)


class AdversarialHook(TrainHook):
    def __init__(self, n_groups: int, n_classes: int, hidden: int, weight: float) -> None:
        self.n_classes = n_classes
        self.weight = weight
        self.adversary = nn.Sequential(
            nn.Linear(2 * n_classes, hidden), nn.ReLU(), nn.Linear(hidden, n_groups)
        )

    def parameters(self) -> list:
        return list(self.adversary.parameters())

    def to(self, device) -> AdversarialHook:
        self.adversary.to(device)
        return self

    def adversary_loss(self, logits, groups, labels):
        probs = grad_reverse(torch.softmax(logits.float(), dim=1), self.weight)
        onehot = F.one_hot(labels, self.n_classes).to(probs.dtype)
        return F.cross_entropy(self.adversary(torch.cat([probs, onehot], dim=1)), groups)

    def loss(self, ce, groups, labels, logits):
        return ce.mean() + self.adversary_loss(logits, groups, labels)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.adversary.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.adversary.load_state_dict(state)


def make_hook(hp, n_groups, n_classes, train_groups, train_labels) -> AdversarialHook:
    return AdversarialHook(n_groups, n_classes, hp.adversary_hidden, hp.adversary_weight)


register(
    Mitigation(
        "adversarial",
        "train",
        "adversary on [prediction, label] through gradient reversal (train.adversary_weight)",
        hyperparameters=("adversary_weight", "adversary_hidden"),
        make_hook=make_hook,
    )
)
