"""Every path the pipeline reads or writes, relative to the project root (the working directory
of ``dvc repro``). One name per thing: the same words name params, stages, folders and MLflow runs.
"""

from __future__ import annotations

from pathlib import Path

# A mitigated run is ``<method>+<mitigation>`` on disk, in stages and in MLflow; ``none`` is the
# plain method (fairxray.mitigate.registry validates the names).
NO_MITIGATION = "none"
RUN_SEP = "+"

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
    """``embeddings/<model>/``: each split of ``data.protocol`` encoded once by ``model``."""
    return EMBEDDINGS / model


def tuned(model: str, method: str) -> Path:
    """``tuned/<model>/<method>.yaml``: the chosen hyperparameters, read by train."""
    return TUNED / model / f"{method}.yaml"


def tuned_study(model: str, method: str) -> Path:
    """``tuned/<model>/<method>.study.yaml``: the study behind them (trials, counts, settings)."""
    return TUNED / model / f"{method}.study.yaml"


def study_db() -> Path:
    """Optuna's SQLite storage; persistent across ``dvc repro`` (never a DVC output) so studies resume."""
    return STUDIES / "optuna.db"


def model_dir(model: str, method: str) -> Path:
    return MODELS / model / method


def seeds_dir(model: str, method: str) -> Path:
    """``models/<model>/<method>/seeds/``: the `train` stage's output, one ``seed<k>/`` per seed."""
    return model_dir(model, method) / "seeds"


def seed_dir(model: str, method: str, seed: int) -> Path:
    return seeds_dir(model, method) / f"seed{seed}"


def checkpoints(model: str, method: str, seed: int) -> Path:
    """Per-epoch checkpoints for resuming; outside every DVC output so a rerun keeps them."""
    return Path("checkpoints") / model / method / f"seed{seed}"


def onnx(model: str, method: str) -> Path:
    """``models/<model>/<method>/model.onnx``: the `export` stage's output."""
    return model_dir(model, method) / "model.onnx"


def predictions(model: str, method: str) -> Path:
    """``predictions/<model>/<method>/``; one ``seed<k>/{val,test}.parquet`` per seed."""
    return PREDICTIONS / model / method


def prediction_file(model: str, method: str, seed: int, split: str) -> Path:
    return predictions(model, method) / f"seed{seed}" / f"{split}.parquet"


def metrics(model: str, method: str) -> Path:
    """``metrics/<model>/<method>/``; one ``seed<k>/`` (metrics.json, by_group.csv, plots) per seed."""
    return METRICS / model / method


def metrics_dir(model: str, method: str, seed: int, split: str = "test") -> Path:
    """The test split's metrics are the `evaluate` stage's output (``metrics/``); another split's
    go to ``metrics-<split>/`` so they never land inside (and disturb) a DVC output."""
    root = METRICS if split == "test" else Path(f"{METRICS}-{split}")
    return root / model / method / f"seed{seed}"
