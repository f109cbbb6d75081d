"""``group_threshold``: per-group decision rules fitted on the validation split only, applied to
the test split (post-processing; the trained model is the plain method's).

- Two classes: fairlearn's ``ThresholdOptimizer`` (Hardt et al., 2016) on the score
  ``p(class 1)``, prefit, with ``mitigate.threshold_constraint`` (equalized_odds by default) and
  accuracy as the objective. Its rule is randomised between two thresholds per group; the
  written probabilities are the rule's probability of deciding each class (``_pmf_predict``),
  so their argmax is the more likely decision.
- More classes (single-label, where fairlearn has no rule): per group, additive offsets ``b_g``
  on the log-probabilities, ``p' = softmax(log p + b_g)``, chosen on that group's validation rows
  to maximise its macro-F1 (coordinate ascent over ``OFFSETS``, class 0 fixed at 0 since softmax
  ignores a shared shift; ties keep the smaller offset). A group with fewer than
  ``MIN_ROWS_PER_CLASS`` validation rows per class keeps ``b_g = 0``, as does a group first met
  in the test split.

Neither rule sees a test label: the test split enters only as scores and groups."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import f1_score

from fairxray.mitigate.registry import Mitigation, register

OFFSETS = np.linspace(-3.0, 3.0, 25)
SWEEPS = 3
MIN_ROWS_PER_CLASS = 2
CONSTRAINTS = ("equalized_odds", "demographic_parity", "true_positive_rate_parity")


class _Scores(BaseEstimator):
    """A prefit 'estimator' whose prediction is the score column it is given."""

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


def binary_rule(val_probs, val_labels, val_groups, constraint: str):
    """fairlearn's ThresholdOptimizer fitted on the validation scores ``p(class 1)``."""
    from fairlearn.postprocessing import ThresholdOptimizer

    to = ThresholdOptimizer(
        estimator=_Scores().fit(None),
        constraints=constraint,
        objective="accuracy_score",
        prefit=True,
        predict_method="predict",
    )
    to.fit(val_probs[:, 1:2], np.asarray(val_labels, dtype=int), sensitive_features=val_groups)
    return to


def _softmax_shift(log_p: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = log_p + b
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def group_offsets(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Offsets ``b`` [C] maximising macro-F1 of ``argmax(log p + b)`` on these rows."""
    n_classes = probs.shape[1]
    log_p = np.log(np.clip(probs, 1e-12, None))
    b = np.zeros(n_classes)
    cls = list(range(n_classes))

    def score(bb):
        pred = (log_p + bb).argmax(axis=1)
        return f1_score(labels, pred, labels=cls, average="macro", zero_division=0)

    best = score(b)
    for _ in range(SWEEPS):
        improved = False
        for c in range(1, n_classes):
            for v in sorted(OFFSETS, key=abs):
                trial = b.copy()
                trial[c] = v
                s = score(trial)
                if s > best + 1e-12:
                    best, b, improved = s, trial, True
        if not improved:
            break
    return b


def multiclass_rule(val_probs, val_labels, val_groups) -> dict:
    """group -> offsets [C], fitted on each group's validation rows."""
    n_classes = val_probs.shape[1]
    rule = {}
    for g in np.unique(val_groups):
        m = val_groups == g
        if m.sum() < MIN_ROWS_PER_CLASS * n_classes:
            rule[g] = np.zeros(n_classes)
        else:
            rule[g] = group_offsets(val_probs[m], val_labels[m])
    return rule


def apply_multiclass(rule: dict, probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    log_p = np.log(np.clip(probs, 1e-12, None))
    out = np.array(probs, dtype=np.float64)
    for g in np.unique(groups):
        m = groups == g
        b = rule.get(g, np.zeros(probs.shape[1]))
        out[m] = _softmax_shift(log_p[m], b)
    return out


def postprocess(val_probs, val_labels, val_groups, test_probs, test_groups, settings):
    """(new val probabilities, new test probabilities, the fitted rule as plain data)."""
    val_groups = np.asarray(val_groups).astype(str)
    test_groups = np.asarray(test_groups).astype(str)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    if val_probs.shape[1] == 2:
        to = binary_rule(val_probs, val_labels, val_groups, settings.threshold_constraint)
        new = [
            to._pmf_predict(p[:, 1:2], sensitive_features=g)
            for p, g in ((val_probs, val_groups), (test_probs, test_groups))
        ]
        info = {"rule": "fairlearn.ThresholdOptimizer", "constraint": settings.threshold_constraint}
        return new[0], new[1], info
    rule = multiclass_rule(val_probs, val_labels, val_groups)
    info = {
        "rule": "per-group log-probability offsets (max validation macro-F1)",
        "offsets": {str(g): [round(float(v), 4) for v in b] for g, b in rule.items()},
    }
    return (
        apply_multiclass(rule, val_probs, val_groups),
        apply_multiclass(rule, test_probs, test_groups),
        info,
    )


register(
    Mitigation(
        "group_threshold",
        "post",
        "per-group decision rules fitted on validation (fairlearn ThresholdOptimizer if binary)",
        postprocess=postprocess,
    )
)
