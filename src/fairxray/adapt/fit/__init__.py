"""The fit loop: :func:`fit` trains one method on :class:`FitData` (split into the loop, its
inputs and its checkpoints)."""

from fairxray.adapt.fit.checkpoint import clear_checkpoints, fingerprint
from fairxray.adapt.fit.inputs import (
    FitData,
    SplitInputs,
    batches,
    epoch_order,
    load_fit_data,
    split_labels,
    split_targets,
)
from fairxray.adapt.fit.loop import (
    DivergedError,
    FitResult,
    fit,
    predict_logits,
    selection_score,
)
from fairxray.adapt.fit.settings import (
    DEVICES,
    SCHEDULERS,
    SELECTIONS,
    check_train_params,
    resolve_device,
)

__all__ = [
    "DEVICES",
    "SCHEDULERS",
    "SELECTIONS",
    "DivergedError",
    "FitData",
    "FitResult",
    "SplitInputs",
    "batches",
    "check_train_params",
    "clear_checkpoints",
    "epoch_order",
    "fingerprint",
    "fit",
    "load_fit_data",
    "predict_logits",
    "resolve_device",
    "selection_score",
    "split_labels",
    "split_targets",
]
