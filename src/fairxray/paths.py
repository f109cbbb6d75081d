"""Every path the pipeline reads or writes, relative to the project root (the working directory
of ``dvc repro``). One name per thing: the same words name params, stages, folders and MLflow runs.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")

DATA = Path("data")
EMBEDDINGS = Path("embeddings")
TUNED = Path("tuned")
STUDIES = Path("studies")
MODELS = Path("models")
PREDICTIONS = Path("predictions")
METRICS = Path("metrics")
REPORTS = Path("reports")
MLRUNS = Path("mlruns")


def splits(protocol: str) -> Path:
    """``data/splits/<protocol>/`` holding ``{train,val,test}.parquet`` and ``manifest.json``."""
    return DATA / "splits" / protocol


def split_file(protocol: str, split: str) -> Path:
    return splits(protocol) / f"{split}.parquet"


def images(protocol: str) -> Path:
    """``data/images/<protocol>/``: the uint8 pixel cache of every image the protocol uses."""
    return DATA / "images" / protocol


def images_partial(protocol: str) -> Path:
    """Work in progress of the image cache; kept outside the DVC output so a crash can resume."""
    return DATA / "partial" / "images" / protocol


def embeddings(model: str) -> Path:
    return EMBEDDINGS / model


def tuned(model: str, method: str) -> Path:
    return TUNED / model / f"{method}.yaml"


def study_db() -> Path:
    """Optuna's SQLite storage; persistent across ``dvc repro`` so studies resume."""
    return STUDIES / "optuna.db"


def model_dir(model: str, method: str) -> Path:
    return MODELS / model / method


def predictions(model: str, method: str) -> Path:
    return PREDICTIONS / model / method


def metrics(model: str, method: str) -> Path:
    return METRICS / model / method


def onnx(model: str, method: str) -> Path:
    return model_dir(model, method) / "model.onnx"
