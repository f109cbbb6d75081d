"""The report's inference tables, read from each cell's files (``metrics/<model>/<method>/``):
``cell.json`` (estimates, combined intervals, gap inference), ``cell_by_group.csv`` (per-group values)
and ``replicates.npz`` (bootstrap replicates for the paired comparisons)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.config import Params
from fairxray.metrics.bootstrap import is_gap_key
from fairxray.metrics.evaluate import cell_dir
from fairxray.metrics.inference import table_of
from fairxray.metrics.paired import mark_significant, paired_bootstrap

INFERENCE = ("null_mean", "excess", "p_value", "p_adjusted", "significant", "mde")
UTILITY = ("accuracy", "macro_f1", "auroc_macro", "brier", "nll", "ece", "var_f1")


@dataclass
class Cells:
    table: pd.DataFrame  # one row per model x method, every cell.json key as a column
    by_group: pd.DataFrame  # cell_by_group.csv of every cell, with model / method columns
    replicates: dict[tuple[str, str], tuple[str, dict[str, np.ndarray]]]  # (pairing, reps)
    ci_methods: dict[tuple[str, str], dict[str, str]]
    missing: list[str]


def read_cells(p: Params, root: str | Path = ".") -> Cells:
    """Every model x method cell of the params grid that has a ``cell.json``; the others in
    ``missing``."""
    root = Path(root)
    rows, groups, reps, methods, missing = [], [], {}, {}, []
    for model in p.models:
        for method in p.methods:
            d = root / cell_dir(model, method)
            if not (d / "cell.json").is_file():
                missing.append(str(d / "cell.json"))
                continue
            raw = json.loads((d / "cell.json").read_text())
            vals = {k: (float("nan") if v is None else float(v)) for k, v in raw.items()}
            rows.append({"model": model, "method": method, **vals})
            meta = d / "cell_evaluation.json"
            if meta.is_file():
                methods[(model, method)] = json.loads(meta.read_text()).get("ci_methods", {})
            if (d / "cell_by_group.csv").is_file():
                bg = pd.read_csv(d / "cell_by_group.csv", keep_default_na=False, na_values=[""])
                groups.append(
                    bg.drop(columns=["label"], errors="ignore").assign(model=model, method=method)
                )
            if (d / "replicates.npz").is_file():
                z = np.load(d / "replicates.npz")
                reps[(model, method)] = (
                    str(z["pairing"]),
                    {str(k): z["values"][i].astype(float) for i, k in enumerate(z["keys"])},
                )
    return Cells(
        pd.DataFrame(rows),
        pd.concat(groups, ignore_index=True) if groups else pd.DataFrame(),
        reps,
        methods,
        missing,
    )


def _sizes(row: pd.Series, attr: str) -> str:
    cols = [c for c in row.index if c.startswith(f"n/{attr}/")]
    return ", ".join(f"{c.split('/', 2)[2]}: {int(row[c])}" for c in cols if math.isfinite(row[c]))


def gap_table(cells: Cells) -> pd.DataFrame:
    """Table 3: one row per cell x gap, with its interval (and the method that gave it), null
    mean, excess, p-value, adjusted p-value, significance, MDE and the group sizes."""
    out = []
    for _, r in cells.table.iterrows():
        how = cells.ci_methods.get((r["model"], r["method"]), {})
        for k in [c for c in r.index if is_gap_key(c) and "/" in c and _is_base(c)]:
            attr = k.split("/")[1]
            out.append(
                {
                    "model": r["model"],
                    "method": r["method"],
                    "table": table_of(k),
                    "gap": k,
                    "value": r[k],
                    "ci_low": r.get(f"{k}/ci_low", np.nan),
                    "ci_high": r.get(f"{k}/ci_high", np.nan),
                    "ci_method": how.get(k, "percentile"),
                    **{x: r.get(f"{k}/{x}", np.nan) for x in INFERENCE},
                    "group_sizes": _sizes(r, attr),
                }
            )
    return pd.DataFrame(out)


_SUFFIXES = ("ci_low", "ci_high", *INFERENCE)


def _is_base(key: str) -> bool:
    return key.rsplit("/", 1)[-1] not in _SUFFIXES and not key.startswith("seed_sd/")


def pairs(p: Params, present: set[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(model, method, ref_model, ref_method): each method vs ``metrics.reference_method`` of the
    same model, each model vs ``metrics.reference_model`` (default: the first model) for the same
    method; only pairs whose cells both exist."""
    ref_method = p.metrics.reference_method
    ref_model = p.metrics.reference_model or p.models[0]
    out = []
    for model in p.models:
        for method in p.methods:
            if method != ref_method:
                out.append((model, method, model, ref_method))
            if model != ref_model:
                out.append((model, method, ref_model, method))
    return [q for q in out if (q[0], q[1]) in present and (q[2], q[3]) in present]


def paired_table(p: Params, cells: Cells, keys: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Table 5 (``paired_comparisons.csv``): the paired-bootstrap difference of every key in ``keys``
    (utility metrics and gaps), adjusted over the whole table (one family), with the test images
    and patients both sides share; notes for pairs that could not be paired. Both tasks use it
    (the multi-label report passes its own keys)."""
    cols = [
        "model",
        "method",
        "ref_model",
        "ref_method",
        "metric",
        "diff",
        "ci_low",
        "ci_high",
        "ci_method",
        "p_value",
        "n_images",
        "n_patients",
    ]
    rows, notes = [], []
    points = {(r["model"], r["method"]): r for _, r in cells.table.iterrows()}
    for model, method, rm, rx in pairs(p, set(cells.replicates)):
        (pa, ra), (pb, rb) = cells.replicates[(model, method)], cells.replicates[(rm, rx)]
        if pa != pb:
            notes.append(
                f"{model}/{method} vs {rm}/{rx}: different test patients or resamples; not paired"
            )
            continue
        t = paired_bootstrap(
            points[(model, method)], ra, points[(rm, rx)], rb, keys=keys, level=p.metrics.ci_level
        )
        pt = points[(model, method)]
        rows.append(
            t.assign(
                model=model,
                method=method,
                ref_model=rm,
                ref_method=rx,
                n_images=pt.get("n/images", np.nan),
                n_patients=pt.get("n/patients", np.nan),
            )
        )
    if not rows:
        return pd.DataFrame(columns=[*cols, "p_adjusted", "significant"]), notes
    t = pd.concat(rows, ignore_index=True)[cols]
    return mark_significant(t, p.metrics.correction, p.metrics.alpha), notes


def how_to_read(p: Params, cells: Cells, gaps: pd.DataFrame) -> list[str]:
    """The "how to read this" block: what the intervals, stars, null means and MDEs say."""
    m = p.metrics
    lines = [
        f"Each cell: estimate [{int(m.ci_level * 100)} % interval]. The interval resamples test "
        "patients (a patient's images together), evaluates every seed on the same resample and "
        "averages, plus the seeds' own spread (seed_sd in cell.json); a deterministic method "
        "(zero-shot) or a single seed is one run, and then the interval is the patient bootstrap "
        "alone. Where a percentile interval would exclude its estimate, the bias-corrected (bc) or "
        "normal interval is used; table 3's ci_method says which.",
        f"* = the gap is significant after {'Holm' if m.correction == 'holm' else 'Benjamini-Hochberg'} "
        f"correction at alpha {m.alpha} within its row: a permutation test ({m.n_perm} "
        "permutations of the sensitive values across patients) of 'the errors do not depend on the "
        "attribute'. null_mean is the gap expected with no real gap (max-min gaps are never 0 under "
        "noise); excess = gap - null_mean.",
        "The paper's ECE_delta is accuracy-driven, not a calibration measure: its per-group E_g = "
        "mean_c mean_i |p_ic - y_ic| always equals 2 (1 - mean true-class probability) / K, so it "
        "compares how much probability the true class receives. The binned ECE gap measures "
        "calibration.",
    ]
    if len(gaps) and gaps["mde"].notna().any():
        n = cells.table["n/images"].iloc[0] if "n/images" in cells.table else float("nan")
        mde = gaps.groupby("gap")["mde"].median().dropna()
        order = ("f1_gap/", "eq_odds/", "ece_gap/", "auroc_gap/", "brier_gap/", "nll_gap/")
        rank = {k: next((i for i, f in enumerate(order) if k.startswith(f)), 9) for k in mde.index}
        headline = [k for k in mde.index if k.endswith(("/standard", "/paper", "/binned"))]
        headline += [k for k in mde.index if k.startswith(("auroc_gap/", "brier_gap/"))]
        shown = sorted(headline, key=lambda k: (rank[k], k))
        lines.append(
            f"Minimum detectable effect (MDE): with this test set ({int(n)} images), the smallest "
            f"true gap found with {int(m.mde_power * 100)} % power at alpha {m.alpha} (simulated "
            "from the observed rates, median over rows): "
            + "; ".join(f"{k} {mde[k]:.3f}" for k in shown)
            + ". A gap below its MDE that is not significant is not evidence that there is no gap."
        )
    return lines


def result_lines(reports: str | Path = "reports") -> list[str]:
    """The measured headline numbers of a finished run, read from ``reports/`` (printed by
    ``scripts/demo.sh``; the README quotes no numbers of its own): per cell the accuracy, the age
    and sex F1 gaps with their intervals and adjusted p-values, and how many gaps of sex alone are
    significant after correction."""
    reports = Path(reports)
    t1 = pd.read_csv(reports / "table1_utility.csv")
    gaps = pd.read_csv(reports / "gap_inference.csv")
    out = []
    for _, r in t1.iterrows():
        g = gaps[(gaps["model"] == r["model"]) & (gaps["method"] == r["method"])].set_index("gap")
        parts = [f"{r['model']}/{r['method']}: accuracy {r['accuracy']:.3f}"]
        for key in ("f1_gap/age_group/standard", "f1_gap/sex/standard"):
            if key in g.index:
                x = g.loc[key]
                parts.append(
                    f"{key} {x['value']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}] "
                    f"p_adj {x['p_adjusted']:.4f}{' *' if x['significant'] == 1.0 else ''}"
                )
        sex = g[[k.split("/")[1] == "sex" for k in g.index]]
        parts.append(f"sex gaps significant: {int((sex['significant'] == 1.0).sum())}/{len(sex)}")
        out.append("; ".join(parts))
    return out
