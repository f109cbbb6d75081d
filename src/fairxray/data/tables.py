"""Shared pieces of the CheXpert and MIMIC-CXR metadata readers: strict CSV reading with every
problem listed (file, row, column), the uncertain-label policy, race groups and a patient split.

Upstream tables are read as strings (``dtype=str``, no NA guessing) so that every value is
checked against the documented codes instead of being coerced silently.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.config import RaceParams
from fairxray.errors import UserError
from fairxray.hashing import sha256_file

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
MAX_LISTED = 50  # problems printed in full; the count covers the rest
# The CheXpert labeller's codes as both datasets ship them: positive, negative, uncertain, and
# blank = not mentioned (read as negative, the convention of the CheXpert paper and its peers).
LABEL_CODES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": 0.0}


class TableError(UserError):
    """Every problem found in one metadata table, one line each."""

    def __init__(self, path: Path, what: str, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = problems[:MAX_LISTED]
        more = len(problems) - len(shown)
        tail = [f"  ... and {more} more"] if more else []
        super().__init__(
            "\n".join(
                [f"{path}: {len(problems)} problem(s) in the {what}:"]
                + [f"  {p}" for p in shown]
                + tail
            )
        )


def find_file(folder: Path, name: str, what: str) -> Path:
    """``folder/name`` or ``folder/name.gz``; a clear error naming both otherwise."""
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    raise UserError(f"{folder / name}: {what} not found (also looked for {name}.gz)")


def read_table(path: Path, what: str, required: Sequence[str]) -> pd.DataFrame:
    """A CSV (plain or gzipped) as strings, with its required columns present and rows."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    if path.suffix.lower() in (".xlsx", ".xls"):
        raise UserError(f"{path}: {what} is a spreadsheet; save it as CSV (same columns) first")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise TableError(path, what, [f"missing required column '{c}'" for c in missing])
    if raw.empty:
        raise UserError(f"{path}: no data rows")
    return raw.apply(lambda s: s.str.strip())


class Problems:
    """Collects ``row N, column 'C': what`` lines (N = CSV line, header = 1) and raises once."""

    def __init__(self, path: Path, what: str, n_rows: int) -> None:
        self.path = path
        self.what = what
        self.line = np.arange(n_rows) + 2
        self.items: list[tuple[int, str]] = []

    def flag(self, mask, col: str, what: Callable[[int], str]) -> None:
        for i in np.flatnonzero(np.asarray(mask, dtype=bool)):
            self.items.append((int(self.line[i]), f"row {self.line[i]}, column '{col}': {what(i)}"))

    def duplicates(self, keys: pd.DataFrame | pd.Series, col: str) -> np.ndarray:
        dup = keys.duplicated(keep=False).to_numpy()
        first: dict = {}
        vals = (
            list(keys.itertuples(index=False, name=None))
            if isinstance(keys, pd.DataFrame)
            else list(keys)
        )
        for i, v in enumerate(vals):
            first.setdefault(v, self.line[i])
        later = keys.duplicated(keep="first").to_numpy()
        self.flag(later, col, lambda i: f"duplicate {vals[i]!r} (first on row {first[vals[i]]})")
        return dup

    def raise_if_any(self) -> None:
        if self.items:
            self.items.sort(key=lambda t: t[0])
            raise TableError(self.path, self.what, [p for _, p in self.items])


def integers(raw: pd.Series, probs: Problems, col: str, lo: int = 0, hi: int | None = None):
    """Integer column; non-integers and values outside [lo, hi] are problems. Returns floats
    (NaN where bad) so callers can keep checking other columns before raising."""
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() | (num % 1 != 0)).to_numpy()
    probs.flag(bad, col, lambda i: f"{raw.iloc[i]!r} is not an integer")
    out = ~bad & ((num < lo) | ((num > hi) if hi is not None else False)).to_numpy()
    rng = f"{lo}-{hi}" if hi is not None else f">= {lo}"
    probs.flag(out, col, lambda i: f"{int(num.iloc[i])} is outside {rng}")
    return num.where(~(bad | out))


def labels(raw: pd.DataFrame, names: Sequence[str], policy: str, probs: Problems) -> pd.DataFrame:
    """CheXpert-labeller columns -> float 0/1 per ``policy`` (NaN = ignore this label here).

    ``ones`` (U-ones): uncertain -1 -> 1; ``zeros`` (U-zeros): -1 -> 0; ``ignore``: -1 -> NaN,
    left out of losses and metrics for that label only (Irvin et al. 2019, CheXpert, compare these
    policies)."""
    if policy not in UNCERTAIN_POLICIES:
        raise UserError(f"uncertain: {policy!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
    out = {}
    for name in names:
        col = raw[name]
        bad = ~col.isin(list(LABEL_CODES)).to_numpy()
        probs.flag(
            bad,
            name,
            lambda i, col=col: f"{col.iloc[i]!r} is not a label code (1.0, 0.0, -1.0, blank)",
        )
        v = col.map(LABEL_CODES).astype(float)
        unc = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
        out[label_column(name)] = v.where(v != -1.0, unc)
    return pd.DataFrame(out, index=raw.index)


def label_column(name: str) -> str:
    """``Pleural Effusion`` -> ``y_Pleural_Effusion`` (same form as NIH's ``y_<Label>``)."""
    return "y_" + name.replace(" ", "_")


def positive_labels(y: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """``label``: the positive findings joined by ``|`` (as NIH's Finding Labels), or ``No Finding``
    when none is positive; uncertain-ignored labels do not count as positive."""
    cols = [label_column(n) for n in names]
    pos = y[cols].to_numpy() == 1.0
    joined = ["|".join(n for n, p in zip(names, row, strict=True) if p) for row in pos]
    return pd.Series([j or "No Finding" for j in joined], index=y.index)


def race_group(raw: pd.Series, race: RaceParams | None) -> pd.Series:
    """Raw race strings -> configured group labels (see ``RaceParams``); blank is Unknown."""
    if race is None:
        raise UserError("data.race: not set; it maps raw race values to groups")
    low = raw.fillna("").str.strip().str.lower()
    out = pd.Series(race.other, index=raw.index, dtype=object)
    done = np.zeros(len(raw), dtype=bool)
    unknown = (low == "").to_numpy().copy()
    for prefix in race.unknown:
        unknown = unknown | low.str.startswith(prefix.lower()).to_numpy()
    out[unknown] = "Unknown"
    done = done | unknown
    for group, prefixes in race.groups.items():
        hit = np.zeros(len(raw), dtype=bool)
        for prefix in prefixes:
            hit = hit | low.str.startswith(prefix.lower()).to_numpy()
        hit = hit & ~done
        out[hit] = group
        done = done | hit
    return out


def patient_split(
    df: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, pd.DataFrame]:
    """Whole patients to train / val / test with shares ``1 - v - t``, ``v``, ``t`` (seeded; the
    patients are sorted first, so the split does not depend on file order)."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            "val_fraction and test_fraction must each lie in (0, 1) and sum to less than 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    patients = np.array(sorted(df["patient_id"].unique()))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    n_test = max(1, round(test_fraction * len(patients)))
    n_val = max(1, round(val_fraction * len(patients)))
    if n_test + n_val >= len(patients):
        raise UserError(f"{len(patients)} patients are too few for a train/val/test split")
    test = set(patients[order[:n_test]])
    val = set(patients[order[n_test : n_test + n_val]])
    split = df["patient_id"].map(lambda p: "test" if p in test else "val" if p in val else "train")
    return {s: df[split == s].reset_index(drop=True) for s in ("train", "val", "test")}


def carve(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, carved): ``fraction`` of the whole patients (at least one) drawn with ``seed``."""
    if not 0 < fraction < 1:
        raise UserError(f"val_fraction must lie in (0, 1), got {fraction}")
    patients = np.array(sorted(df["patient_id"].unique()))
    n = max(1, round(fraction * len(patients)))
    if n >= len(patients):
        raise UserError(f"{len(patients)} patient(s) are too few to hold out {n} for val")
    chosen = set(np.random.default_rng(seed).choice(patients, size=n, replace=False))
    is_carved = df["patient_id"].isin(chosen)
    return df[~is_carved].reset_index(drop=True), df[is_carved].reset_index(drop=True)


def group_counts(splits: dict[str, pd.DataFrame], columns: Sequence[str]) -> list[dict]:
    """Rows per split x sensitive cell (e.g. age_group, sex, race), for the manifest."""
    rows = []
    for name, df in splits.items():
        cols = [c for c in columns if c in df.columns]
        for key, n in df.groupby(cols, dropna=False).size().items():
            key = key if isinstance(key, tuple) else (key,)
            rows.append({"split": name, **dict(zip(cols, map(str, key), strict=True)), "n": int(n)})
    return rows


def portable_path(path: str | Path | None) -> str | None:
    """A path as identity may record it: relative to the working directory when inside it, else
    its file name only. A moved or re-cloned project gives the same manifest (and so the same
    data hash); the content is identified by its sha256 beside it."""
    if path is None:
        return None
    path, here = Path(path).resolve(), Path.cwd().resolve()
    return path.relative_to(here).as_posix() if path.is_relative_to(here) else path.name


def file_record(path: Path, rows: int) -> dict:
    return {"path": portable_path(path), "sha256": sha256_file(path), "rows": int(rows)}


def portable_fields(record: dict, keys) -> dict:
    """``record`` with the path-valued ``keys`` made portable (see :func:`portable_path`)."""
    return {k: (portable_path(v) if k in keys and v is not None else v) for k, v in record.items()}
