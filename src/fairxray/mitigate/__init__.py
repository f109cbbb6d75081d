"""Bias mitigations by name (``none`` plus the registered ones), composing with every trainable
adaptation method: a run ``<method>+<mitigation>`` (see :mod:`fairxray.mitigate.registry`)."""

from fairxray.mitigate import adversarial, group_balanced, group_dro, group_threshold  # noqa: F401
from fairxray.mitigate.registry import (
    NONE,
    Mitigation,
    TrainHook,
    get_mitigation,
    list_mitigations,
    register,
    run_name,
    split_run,
)

__all__ = [
    "NONE",
    "Mitigation",
    "TrainHook",
    "get_mitigation",
    "list_mitigations",
    "register",
    "run_name",
    "split_run",
]
