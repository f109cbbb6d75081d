"""What ``data.task`` changes in the fit loop: the loss, the probabilities and the selection score.

- ``multiclass`` (the 6x200 protocols): one class index per row, cross-entropy, softmax.
- ``multilabel`` (NIH's official split, CheXpert, MIMIC): one float target per label, 1, 0 or
  NaN (masked, e.g. CheXpert's uncertain labels under ``ignore``); a logit per label; the loss is
  the binary cross-entropy with logits averaged over the *observed* (non-NaN) entries of the batch:

      loss = sum_{(i,l) observed} bce(z_il, y_il) / #observed,
      bce(z, y) = max(z, 0) - z y + log(1 + exp(-|z|))

  (``F.binary_cross_entropy_with_logits``; a masked entry adds nothing to the loss or its
  gradient); the probabilities are ``sigmoid(z)`` in float64, independent per label.

Selection (``train.selection``) and the tune objective (``tune.objective``) under multilabel:
``macro_auroc`` (the mean over labels of the validation AUROC, each label's AUROC over its observed
rows, labels without both a positive and a negative observed row left out) or ``neg_loss`` (the
negated masked BCE above). ``accuracy`` and ``macro_f1`` are multi-class only: a 0.5 cut of
independent sigmoids is not the per-label threshold ``evaluate`` chooses on validation, so the
score would select on a quantity nothing reports; they are rejected under multilabel, as is
``macro_auroc`` under multiclass (the multi-class path stays as it was). ``train.class_balanced``
(sampling by the row's single class) has no meaning for multi-label rows and is rejected too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fairxray.errors import UserError

TASKS = ("multiclass", "multilabel")
TASK_SELECTIONS = {
    "multiclass": ("macro_f1", "accuracy", "neg_loss"),
    "multilabel": ("macro_auroc", "neg_loss"),
}


def task_problems(task: str, selection: str, class_balanced: bool, key: str) -> list[str]:
    """Every reason ``selection`` (the value of ``key``, e.g. ``train.selection``) or
    ``class_balanced`` cannot serve ``data.task``, one line each."""
    if task not in TASKS:
        return [f"'data.task' must be one of {', '.join(TASKS)}, got {task!r}"]
    problems = []
    valid = TASK_SELECTIONS[task]
    if selection not in valid:
        problems.append(
            f"'{key}' {selection!r} is not valid with data.task {task} (valid: {', '.join(valid)})"
        )
    if class_balanced and task == "multilabel":
        problems.append(
            "'train.class_balanced' samples by each row's single class; it is not available "
            "with data.task multilabel (set it to false)"
        )
    return problems


def check_task(task: str, selection: str, class_balanced: bool, src: str, key: str) -> None:
    """The first of :func:`task_problems` as a one-line :class:`UserError` naming ``src``."""
    problems = task_problems(task, selection, class_balanced, key)
    if problems:
        raise UserError(f"{src}: {problems[0]}")


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over the observed (non-NaN) entries of ``targets``
    ``[B, L]``; 0 (with a zero gradient) when nothing is observed."""
    observed = ~torch.isnan(targets)
    y = torch.where(observed, targets, torch.zeros_like(targets))
    per = F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none")
    per = torch.where(observed, per, torch.zeros_like(per))
    return per.sum() / observed.sum().clamp(min=1)


def task_loss(task: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The batch loss: cross-entropy (multiclass) or :func:`masked_bce` (multilabel)."""
    if task == "multilabel":
        return masked_bce(logits, targets)
    return F.cross_entropy(logits.float(), targets)


def loss_count(task: str, targets: torch.Tensor) -> int:
    """What :func:`task_loss` averages over: rows (multiclass) or unmasked targets (multilabel).
    Data-parallel shards rescale their mean by it (:func:`fairxray.adapt.fit.distributed.shard_loss`)."""
    if task == "multilabel":
        return int((~torch.isnan(targets)).sum())
    return len(targets)


def task_probs(task: str, logits: torch.Tensor) -> np.ndarray:
    """float64 probabilities: softmax rows (multiclass) or independent sigmoids (multilabel)."""
    if task == "multilabel":
        return torch.sigmoid(logits.double()).cpu().numpy()
    return torch.softmax(logits.double(), dim=1).cpu().numpy()


def targets_tensor(task: str, labels: np.ndarray) -> torch.Tensor:
    """A CPU copy of a split's labels as the loss takes them: int64 [N] or float32 [N, L]."""
    if task == "multilabel":
        return torch.from_numpy(np.array(labels, dtype=np.float32))
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def macro_auroc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Mean per-label AUROC over the observed rows of each label; labels without both classes
    observed are left out; NaN when no label qualifies (or any probability is not finite)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(targets, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(p).all():
        return float("nan")
    scores = []
    for j in range(y.shape[1]):
        m = ~np.isnan(y[:, j])
        yj = y[m, j]
        if yj.size and 0 < yj.sum() < yj.size:
            scores.append(roc_auc_score(yj, p[m, j]))
    return float(np.mean(scores)) if scores else float("nan")


def multilabel_neg_loss(targets: np.ndarray, probs: np.ndarray) -> float:
    """The negated masked BCE of probabilities (clipped away from 0 and 1 to stay finite)."""
    y = np.asarray(targets, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-300, 1 - 1e-16)
    m = ~np.isnan(y)
    if not m.any():
        return float("nan")
    yy, pp = y[m], p[m]
    return float(np.mean(yy * np.log(pp) + (1 - yy) * np.log1p(-pp)))
