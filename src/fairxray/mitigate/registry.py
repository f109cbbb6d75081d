"""Mitigations by name: ``none`` plus every registered intervention.

A :class:`Mitigation` is one of two kinds:

- ``train``: it changes how a trainable adaptation method fits. ``make_hook(hp, n_groups,
  n_classes, train_groups, train_labels)`` returns a :class:`TrainHook` that the fit loop asks
  for the batch loss (from the per-row cross-entropy, the rows' sensitive groups and labels and
  the logits) and for extra trainable parameters (an adversary). It sees the training split only.
- ``post``: it leaves training alone and turns one method's predictions into new ones.
  ``postprocess(val, test, groups_val, groups_test, settings)`` fits on the validation rows only
  and applies the fitted rule to the test rows.

A mitigated run is named ``<method>+<mitigation>`` (``mlp+group_dro``) everywhere: the ``--method``
of every stage, its folders (``predictions/<model>/mlp+group_dro/``), its tuned file, its MLflow
runs. ``none`` keeps the plain method name and today's paths.

Each mitigation is one file of this package ending in ``register(Mitigation(...))``, plus its
import in ``fairxray/mitigate/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fairxray.errors import UserError
from fairxray.paths import NO_MITIGATION as NONE
from fairxray.paths import RUN_SEP as SEP

KINDS = ("train", "post")


class TrainHook:
    """What a ``train`` mitigation changes in the fit loop (the defaults change nothing)."""

    def parameters(self) -> list:
        """Extra trainable tensors (an adversary's); the optimiser gets them at ``train.lr``."""
        return []

    def to(self, device) -> TrainHook:
        return self

    def loss(self, ce, groups, labels, logits):
        """The batch loss from the per-row cross-entropy ``ce`` [B] (float32), the rows' group
        codes and class indices [B] (int64) and the logits [B, C]."""
        return ce.mean()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


@dataclass(frozen=True)
class Mitigation:
    name: str
    kind: str  # "train" | "post"
    description: str
    # train params it reads (the tune space may search them): documentation and validation
    hyperparameters: tuple[str, ...] = ()
    make_hook: Callable[..., TrainHook] | None = None
    postprocess: Callable[..., Any] | None = None


_MITIGATIONS: dict[str, Mitigation] = {}


def register(m: Mitigation) -> Mitigation:
    if m.kind not in KINDS:
        raise ValueError(f"mitigation {m.name!r}: kind must be one of {KINDS}")
    if (m.kind == "train") != (m.make_hook is not None) or (m.kind == "post") != (
        m.postprocess is not None
    ):
        raise ValueError(
            f"mitigation {m.name!r}: a train kind needs make_hook, a post kind postprocess"
        )
    if m.name in _MITIGATIONS or m.name == NONE or SEP in m.name:
        raise ValueError(f"mitigation {m.name!r}: name taken or invalid")
    _MITIGATIONS[m.name] = m
    return m


def list_mitigations() -> list[str]:
    """Every registered mitigation (``none`` is not one: it is the plain method)."""
    return list(_MITIGATIONS)


def get_mitigation(name: str) -> Mitigation:
    try:
        return _MITIGATIONS[name]
    except KeyError:
        known = ", ".join(_MITIGATIONS)
        raise UserError(f"mitigation '{name}': unknown; known mitigations: {known}") from None


def run_name(method: str, mitigation: str) -> str:
    """``mlp`` for ``none``, ``mlp+group_dro`` otherwise: the name every stage and folder uses."""
    return method if mitigation == NONE else f"{method}{SEP}{mitigation}"


def split_run(name: str) -> tuple[str, str]:
    """``mlp+group_dro`` -> ``("mlp", "group_dro")``; ``mlp`` -> ``("mlp", "none")``. The
    mitigation is checked against the registry; the method is the caller's to check."""
    method, sep, mitigation = name.partition(SEP)
    if not sep:
        return name, NONE
    if not method or SEP in mitigation:
        raise UserError(f"run '{name}': expected <method> or <method>+<mitigation>")
    get_mitigation(mitigation)
    return method, mitigation
