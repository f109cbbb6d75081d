"""The report's mitigation section: for each model x method x mitigation x seed, the change
against the plain run (``none``) in accuracy and in each headline gap, paired on the same test
patients, and a Pareto figure of accuracy against gap.

Pairing: the mitigated run and its ``none`` run predict the same test rows (same ``image_id``
order, checked); one set of patient resamples (``metrics.n_boot``, seed ``metrics.seed``: the
draws of ``evaluate``) scores both sides (:func:`paired_metrics`), and the difference, interval
and p-value come from the shared engine, :func:`fairxray.metrics.paired.paired_bootstrap`, as in
``paired_comparisons.csv``. Each row gives the difference (mitigated - none), its
``metrics.ci_level`` percentile interval (bias-corrected or normal where the percentile one
would exclude the difference, named in ``ci_method``), the p-value of "no difference" (the null
reference: a difference of 0; two-sided, from the bootstrap standard error,
:func:`fairxray.metrics.paired.normal_p`: a count of resampled differences beyond 0 is floored
at ``2 / (B + 1)``, too coarse to survive a correction over this section's many rows) and that
p-value Holm-corrected over the whole section (every row is one test of one family). Group sizes: the test rows per group of each attribute. Headline gaps:
``f1_gap/<attr>/standard`` and ``eq_odds/<attr>/worst_case_max`` of
:mod:`fairxray.metrics.fairness`, as ``evaluate`` computes them; a negative difference is a
smaller gap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import paths
from fairxray.config import Params
from fairxray.errors import UserError
from fairxray.metrics.bootstrap import patient_weights, replicate_metrics
from fairxray.metrics.evaluate import point_metrics, prepare
from fairxray.metrics.evaluate import settings as eval_settings
from fairxray.metrics.inference import adjust
from fairxray.metrics.paired import paired_bootstrap
from fairxray.metrics.predictions import read_predictions
from fairxray.mitigate import run_name


@dataclass
class MitigationSection:
    effects: pd.DataFrame  # one row per model x method x mitigation x seed x metric
    points: pd.DataFrame  # accuracy and gaps per run (none included): the Pareto figure's data
    missing: list[str]


def headline_keys(p: Params) -> list[str]:
    keys = ["accuracy"]
    for attr in p.metrics.sensitive:
        keys += [f"f1_gap/{attr}/standard", f"eq_odds/{attr}/worst_case_max"]
    return keys


def paired_metrics(a: pd.DataFrame, b: pd.DataFrame, s, keys: list[str]) -> dict:
    """key -> (value none, value mitigated, diff, ci_low, ci_high, ci_method, p) for two
    predictions tables of the same test rows: the point values of ``evaluate`` and the replicates
    of both sides on one patient-weight matrix ``W`` (``metrics.n_boot`` x rows, seed
    ``metrics.seed``; the vectorised bootstrap of :mod:`fairxray.metrics.bootstrap`), compared by
    :func:`fairxray.metrics.paired.paired_bootstrap` (mitigated - none; p from the bootstrap
    standard error, ``p_rule="normal"``)."""
    pa, pb = prepare(a, s, "none"), prepare(b, s, "mitigated")
    ra = rb = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        va, _ = point_metrics(pa, s)
        vb, _ = point_metrics(pb, s)
        if s.n_boot > 0:
            W = patient_weights(pa.patients, s.n_boot, s.seed)
            kw = {
                "classes": s.classes,
                "groupings": pa.groupings,
                "paper_subgroups": pa.paper_subgroups,
                "n_bins": s.ece_bins,
                "min_group_size": s.min_group_size,
            }
            ra, _ = replicate_metrics(W, y=pa.y, prob=pa.prob, **kw)
            rb, _ = replicate_metrics(W, y=pb.y, prob=pb.prob, **kw)
    t = paired_bootstrap(vb, rb, va, ra, keys=keys, level=s.ci_level, p_rule="normal")
    t = t.set_index("metric")
    out = {}
    for k in keys:
        r = t.loc[k] if k in t.index else None
        if r is None:  # no replicates (n_boot 0): the difference alone
            res = (float(vb[k] - va[k]), np.nan, np.nan, "none", np.nan)
        else:
            res = (r["diff"], r["ci_low"], r["ci_high"], r["ci_method"], r["p_value"])
        out[k] = (float(va[k]), float(vb[k]), *res)
    return out


def _pair(p: Params, root: Path, model: str, method: str, run: str, seed: int):
    classes, sens = list(p.data.classes), list(p.metrics.sensitive)
    a_path = root / paths.prediction_file(model, method, seed, "test")
    b_path = root / paths.prediction_file(model, run, seed, "test")
    if not (a_path.is_file() and b_path.is_file()):
        return None
    a, b = read_predictions(a_path, classes, sens), read_predictions(b_path, classes, sens)
    if not np.array_equal(a["image_id"].to_numpy(), b["image_id"].to_numpy()):
        raise UserError(f"{b_path}: test rows differ from {a_path}; a paired comparison needs both")
    return a, b


def _group_sizes(a: pd.DataFrame, sensitive) -> str:
    return "; ".join(
        f"{attr}: " + ", ".join(f"{g} {n}" for g, n in a[attr].value_counts().sort_index().items())
        for attr in sensitive
    )


def collect_effects(p: Params, root: str | Path = ".") -> MitigationSection | None:
    """The section's tables; None when the params list no mitigation."""
    if not p.mitigations:
        return None
    root, s, keys = Path(root), eval_settings(p), headline_keys(p)
    rows, points, missing = [], [], []
    for model in p.models:
        for method in p.mitigate.methods:
            for seed in p.seeds:
                cell = {"model": model, "method": method, "seed": seed}
                for mitigation in p.mitigations:
                    run = run_name(method, mitigation)
                    pair = _pair(p, root, model, method, run, seed)
                    if pair is None:
                        missing.append(f"{model}/{run}/seed{seed}")
                        continue
                    a, b = pair
                    res = paired_metrics(a, b, s, keys)
                    if not any(
                        pt.get("mitigation") == "none" and pt.items() >= cell.items()
                        for pt in points
                    ):
                        points.append(
                            {**cell, "mitigation": "none", **{k: v[0] for k, v in res.items()}}
                        )
                    points.append(
                        {**cell, "mitigation": mitigation, **{k: v[1] for k, v in res.items()}}
                    )
                    sizes = _group_sizes(a, p.metrics.sensitive)
                    for k, (va, vb, diff, lo, hi, how, pv) in res.items():
                        rows.append(
                            {
                                **cell,
                                "mitigation": mitigation,
                                "metric": k,
                                "none": va,
                                "mitigated": vb,
                                "diff": diff,
                                "ci_low": lo,
                                "ci_high": hi,
                                "ci_method": how,
                                "p": pv,
                                "n_images": len(a),
                                "n_patients": int(a["patient_id"].nunique()),
                                "group_sizes": sizes,
                            }
                        )
    effects = pd.DataFrame(rows)
    if len(effects):
        adj = adjust({str(i): float(v) for i, v in enumerate(effects["p"])}, "holm")
        effects["p_holm"] = [adj[str(i)] for i in range(len(effects))]
    return MitigationSection(effects, pd.DataFrame(points), missing)


def display_effects(effects: pd.DataFrame, digits: int = 3, level: float = 0.95) -> pd.DataFrame:
    """One line per comparison: values, the difference [interval], p and Holm-corrected p."""
    if not len(effects):
        return pd.DataFrame()

    def f(v):
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"

    return pd.DataFrame(
        {
            "model": effects["model"],
            "method": effects["method"],
            "mitigation": effects["mitigation"],
            "seed": effects["seed"],
            "metric": effects["metric"],
            "none": effects["none"].map(f),
            "mitigated": effects["mitigated"].map(f),
            f"change [{level * 100:g}% CI]": [
                f"{f(d)} [{f(lo)}, {f(hi)}]"
                for d, lo, hi in zip(
                    effects["diff"], effects["ci_low"], effects["ci_high"], strict=True
                )
            ],
            "p": effects["p"].map(f),
            "p (Holm)": effects["p_holm"].map(f),
            "test patients": effects["n_patients"],
            "group sizes (test images)": effects["group_sizes"],
        }
    )


def pareto_front(acc: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (accuracy at least as high and gap at least
    as low, one of them strictly)."""
    acc, gap = np.asarray(acc, float), np.asarray(gap, float)
    out = np.ones(len(acc), dtype=bool)
    for i in range(len(acc)):
        better = (acc >= acc[i]) & (gap <= gap[i]) & ((acc > acc[i]) | (gap < gap[i]))
        out[i] = not better.any()
    return out


def figure_pareto(points: pd.DataFrame, gap_keys: list[str], demo: bool):
    """Accuracy against each gap, one panel per gap; every run a point, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(gap_keys), figsize=(4.5 * len(gap_keys), 4), squeeze=False)
    for ax, key in zip(axes[0], gap_keys, strict=True):
        for (model, method, seed), grp in points.groupby(["model", "method", "seed"]):
            ok = grp[["accuracy", key]].notna().all(axis=1).to_numpy()
            grp = grp[ok]
            ax.scatter(grp[key], grp["accuracy"], zorder=3)
            for _, r in grp.iterrows():
                ax.annotate(r["mitigation"], (r[key], r["accuracy"]), fontsize=7)
            front = grp[pareto_front(grp["accuracy"].to_numpy(), grp[key].to_numpy())]
            front = front.sort_values(key)
            ax.plot(front[key], front["accuracy"], "--", label=f"{model}/{method} seed{seed} front")
        ax.set_xlabel(f"{key} (lower is fairer)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    title = "Mitigations: accuracy against gap (test)"
    fig.suptitle(title + (" -- DEMO" if demo else ""))
    fig.tight_layout()
    return fig


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def write_section(tmp: Path, p: Params, root: str | Path, demo: bool) -> tuple[str, list]:
    """Write ``mitigation_effects.csv``, ``mitigation_points.csv`` and
    ``figures/mitigation_pareto.png`` into ``tmp``; return the Markdown text of the section and
    its HTML sections ``[(title, html)]`` (both empty when no mitigation is listed)."""
    import base64
    import html
    import io

    sec = collect_effects(p, root)
    if sec is None:
        return "", []
    from fairxray.metrics.evaluate import labelled

    labelled(sec.effects, demo).to_csv(tmp / "mitigation_effects.csv", index=False)
    labelled(sec.points, demo).to_csv(tmp / "mitigation_points.csv", index=False)
    table = display_effects(sec.effects, level=p.metrics.ci_level)
    level = p.metrics.ci_level
    intro = (
        "Each mitigation against the plain run (none) of the same model, method and seed, paired "
        f"on the same test patients (patient bootstrap, {p.metrics.n_boot} resamples, the same "
        "as paired_comparisons.csv): change = mitigated - none (negative gap change = fairer), "
        f"{level * 100:g} % interval (percentile; bias-corrected or normal where it would exclude "
        "the change, ci_method in mitigation_effects.csv), p-value of no change (bootstrap "
        "standard error), Holm-corrected over every row of this table. Mitigations act on "
        f"'{p.mitigate.attribute}'; selection, thresholds and tuning used validation data only."
    )
    if sec.missing:
        intro += " Missing runs: " + ", ".join(sec.missing) + "."
    md = ["## Mitigation: paired effects against none\n", intro + "\n"]
    sections = [("Mitigation: paired effects against none", f"<p>{html.escape(intro)}</p>")]
    if len(table):
        md.append(_markdown(table) + "\n")
        sections[0] = (sections[0][0], sections[0][1] + table.to_html(index=False, escape=True))
    gap_keys = [f"f1_gap/{a}/standard" for a in p.metrics.sensitive]
    if len(sec.points):
        fig = figure_pareto(sec.points, gap_keys, demo)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
        png = buf.getvalue()
        (tmp / "figures" / "mitigation_pareto.png").write_bytes(png)
        md.append("![mitigation Pareto](figures/mitigation_pareto.png)\n")
        src = base64.b64encode(png).decode()
        sections.append(
            (
                "Mitigation: accuracy against gap (Pareto)",
                f'<img alt="mitigation Pareto" src="data:image/png;base64,{src}">',
            )
        )
    return "\n".join(md), sections
