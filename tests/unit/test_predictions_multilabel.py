"""The multi-label form of the predictions contract (metrics/predictions.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairxray.errors import UserError
from fairxray.metrics.predictions import target_columns, validate_predictions, write_predictions

CLASSES = ["Effusion", "No Finding"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["a.png", "b.png", "c.png"],
            "patient_id": ["1", "2", "3"],
            "label_idx": [-1, 1, 0],
            "prob_Effusion": [0.9, 0.8, 0.1],
            "prob_No Finding": [0.7, 0.2, 0.6],  # rows do not sum to 1: independent labels
            "y_Effusion": [1.0, np.nan, 1.0],
            "y_No_Finding": [0.0, 1.0, 0.0],
            "sex": ["M", "F", "F"],
        }
    )


def test_target_columns_use_the_split_files_names():
    assert target_columns(["Pleural Effusion", "No Finding"]) == ["y_Pleural_Effusion", "y_No_Finding"]


def test_a_multilabel_table_passes_and_round_trips(tmp_path):
    df = _frame()
    path = write_predictions(df, tmp_path / "test.parquet", CLASSES, ["sex"], "multilabel")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)


def test_the_same_table_breaks_the_multiclass_contract():
    with pytest.raises(UserError, match="label_idx -1 outside 0..1"):
        validate_predictions(_frame(), CLASSES, ["sex"], "p.parquet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_Effusion": [2.0, 0.0, 1.0]}, "column 'y_Effusion' is 2, not 0, 1 or NaN"),
        ({"prob_Effusion": [1.2, 0.0, 1.0]}, "'prob_Effusion' is 1.2, not a probability"),
        ({"label_idx": [-2, 0, 0]}, "label_idx -2 outside -1..1"),
    ],
)
def test_bad_multilabel_values_are_named(change, message):
    with pytest.raises(UserError, match=message):
        validate_predictions(_frame().assign(**change), CLASSES, ["sex"], "p.parquet", "multilabel")


def test_a_missing_target_column_is_named():
    df = _frame().drop(columns=["y_No_Finding"])
    with pytest.raises(UserError, match="missing column 'y_No_Finding'"):
        validate_predictions(df, CLASSES, ["sex"], "p.parquet", "multilabel")
