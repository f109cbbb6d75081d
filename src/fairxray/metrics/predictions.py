"""The predictions contract: one parquet table per run and split (docs/architecture.md).

Two forms, by ``data.task``:

- ``multiclass``: ``image_id``, ``patient_id``, ``label_idx`` (index into ``data.classes``), one
  probability column ``prob_<ClassName>`` per class (finite, in [0, 1], each row summing to 1),
  and the sensitive columns (``metrics.sensitive``; others allowed).
- ``multilabel``: the same ids (``label_idx`` is kept from the split file: -1 for a row with
  several or no labels), one independent probability ``prob_<ClassName>`` per label (finite, in
  [0, 1], no sum), and one float target ``y_<Class_Name>`` per label (the split files' column,
  spaces as ``_``): 1, 0, or NaN for a label masked out (CheXpert/MIMIC ``uncertain: ignore``).

 Every stage that writes predictions goes through
:func:`write_predictions`, every reader through :func:`read_predictions`, so a table that breaks the
contract fails with one line naming the file, the column and the first bad row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.errors import UserError

ID_COLUMNS = ("image_id", "patient_id", "label_idx")
TASKS = ("multiclass", "multilabel")
# float32 softmax outputs summed over 6-14 classes are off by ~1e-7; 1e-5 leaves room for that and
# still rejects logits, sigmoid outputs and a dropped column.
SUM_TOLERANCE = 1e-5


def prob_columns(classes: Sequence[str]) -> list[str]:
    """``["prob_Atelectasis", ...]`` in class-index order."""
    return [f"prob_{c}" for c in classes]


def target_columns(classes: Sequence[str]) -> list[str]:
    """Multilabel targets ``["y_Atelectasis", ..., "y_No_Finding"]`` in class-index order (the
    split files' names: :func:`fairxray.data.tables.label_column`)."""
    return ["y_" + c.replace(" ", "_") for c in classes]


def _row_ref(df: pd.DataFrame, pos: int) -> str:
    image = df["image_id"].iloc[pos] if "image_id" in df.columns else "?"
    return f"row {pos} (image_id {image})"


def validate_predictions(
    df: pd.DataFrame,
    classes: Sequence[str],
    sensitive: Sequence[str],
    source: str | Path,
    task: str = "multiclass",
) -> pd.DataFrame:
    """Check ``df`` against the contract of ``task``; return it unchanged, or raise one-line
    :class:`UserError`.

    ``source`` names the file (or producer) in the message, e.g.
    ``predictions/toy/mlp/seed77/test.parquet: row 3 (image_id 00000005_000.png): prob_* sum to 0.93, not 1``.
    """
    src = str(source)
    if task not in TASKS:
        raise UserError(f"{src}: unknown task '{task}' (known: {', '.join(TASKS)})")
    multilabel = task == "multilabel"
    probs = prob_columns(classes)
    targets = target_columns(classes) if multilabel else []
    for col in (*ID_COLUMNS, *probs, *targets, *sensitive):
        if col not in df.columns:
            raise UserError(
                f"{src}: missing column '{col}' (has {', '.join(map(str, df.columns))})"
            )
    if len(df) == 0:
        raise UserError(f"{src}: no rows")
    extra = sorted(c for c in df.columns if str(c).startswith("prob_") and c not in probs)
    if extra:
        raise UserError(
            f"{src}: column '{extra[0]}' is not a class of data.classes ({', '.join(classes)})"
        )
    for col in ("image_id", "patient_id", *sensitive):
        bad = np.flatnonzero(df[col].isna().to_numpy())
        if bad.size:
            raise UserError(f"{src}: {_row_ref(df, int(bad[0]))}: column '{col}' is empty")
    label = df["label_idx"]
    if not pd.api.types.is_integer_dtype(label):
        raise UserError(f"{src}: column 'label_idx' must be integer, got {label.dtype}")
    low = -1 if multilabel else 0
    bad = np.flatnonzero(((label < low) | (label >= len(classes))).to_numpy())
    if bad.size:
        raise UserError(
            f"{src}: {_row_ref(df, int(bad[0]))}: label_idx {int(label.iloc[bad[0]])} "
            f"outside {low}..{len(classes) - 1}"
        )
    for col in targets:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise UserError(f"{src}: column '{col}' must be numeric 0/1 (NaN = masked)")
        y = df[col].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~(np.isnan(y) | (y == 0) | (y == 1)))
        if bad.size:
            raise UserError(
                f"{src}: {_row_ref(df, int(bad[0]))}: column '{col}' is {y[bad[0]]:.6g}, "
                "not 0, 1 or NaN (masked)"
            )
    for col in probs:
        if not pd.api.types.is_float_dtype(df[col]):
            raise UserError(f"{src}: column '{col}' must be float, got {df[col].dtype}")
    p = df[probs].to_numpy(dtype=np.float64)
    finite = np.isfinite(p)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise UserError(f"{src}: {_row_ref(df, int(r))}: column '{probs[c]}' is {p[r, c]}")
    outside = (p < 0) | (p > 1)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise UserError(
            f"{src}: {_row_ref(df, int(r))}: column '{probs[c]}' is {p[r, c]:.6g}, not a probability"
        )
    if multilabel:
        return df  # independent per-label probabilities: no sum
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if off.size:
        r = int(off[0])
        raise UserError(
            f"{src}: {_row_ref(df, r)}: prob_* columns sum to {sums[r]:.6g}, not 1 "
            f"({off.size} rows off by more than {SUM_TOLERANCE:g}; write softmax probabilities)"
        )
    return df


def read_predictions(
    path: str | Path, classes: Sequence[str], sensitive: Sequence[str], task: str = "multiclass"
) -> pd.DataFrame:
    """Read and validate one predictions parquet."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: predictions file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise UserError(
            f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})"
        ) from None
    return validate_predictions(df, classes, sensitive, path, task)


def write_predictions(
    df: pd.DataFrame,
    path: str | Path,
    classes: Sequence[str],
    sensitive: Sequence[str],
    task: str = "multiclass",
) -> Path:
    """Validate ``df`` and write it atomically (temp file, then rename) to ``path``."""
    path = Path(path)
    validate_predictions(df, classes, sensitive, path, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
