"""`check`: validate everything in ``params.yaml`` before any other stage does work.

The first DVC stage. It depends on the whole params file, so an unknown key anywhere (also at the
top level, which no other stage reads) makes it rerun and fail; every other stage depends on its
output, so DVC stops before it removes any stage's cached outputs. What it checks, in order:

- the typed loader (:func:`fairxray.config.load_params`): unknown and missing keys, types, ranges
  and safe names (the names go into stage commands and paths);
- model names against the model registry and method names against the method registry;
- the train and tune sections (the checks ``fit`` and the study apply) and every search space;
- ``data.task`` against the rest (:func:`check_task_params`): ``train.selection`` and
  ``tune.objective`` valid for the task, and under multilabel a protocol whose splits carry a
  ``y_<Class>`` target per label, no ``train.class_balanced`` and no ``mitigations``;
- in the paper profile, the full preflight of the real inputs
  (:func:`fairxray.reproduce.checks.preflight`): every needed image, the metadata checksum and every
  model's weights, all problems in one message.

Its output ``check/params.json`` lists what was checked; it holds no hash of the params, so a
change that passes leaves it byte-identical and DVC reruns only the stages that read the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fairxray.config import Params, load_params
from fairxray.errors import UserError

OUTPUT = Path("check") / "params.json"


def check_names(p: Params) -> list[str]:
    """Problems with ``models`` and ``methods`` against their registries (all of them)."""
    from fairxray.adapt.registry import list_methods
    from fairxray.models.registry import list_models

    problems = []
    for key, names, known in (
        ("models", p.models, list_models()),
        ("methods", p.methods, list_methods()),
    ):
        for i, name in enumerate(names):
            if name not in known:
                problems.append(
                    f"'{key}[{i}]' {name!r} is not registered (known: {', '.join(known)})"
                )
    return problems


def check_sections(p: Params) -> list[str]:
    """Problems with the train and tune sections and each method's search space."""
    from fairxray.adapt.fit.settings import check_train_params
    from fairxray.tune.space import check_tune_params, search_space

    problems = []
    for check in (
        lambda: check_train_params(p.train, p.source),
        lambda: check_tune_params(p.tune, p.source),
        *(lambda m=m: search_space(p.tune, m, p.source) for m in p.methods),
    ):
        try:
            check()
        except UserError as exc:
            problems.append(str(exc).removeprefix(f"{p.source}: "))
    from fairxray.adapt.registry import list_methods
    from fairxray.mitigate.registry import list_mitigations

    unknown = sorted(set(p.tune.space) - set(list_methods()) - set(list_mitigations()))
    problems += [f"'tune.space.{m}' is not a method or a mitigation" for m in unknown]
    problems += [
        f"'mitigations[{i}]' {m!r}: unknown; known mitigations: {', '.join(list_mitigations())}"
        for i, m in enumerate(p.mitigations)
        if m not in list_mitigations()
    ]
    if p.mitigations and not set(p.mitigate.methods) <= set(p.methods):
        problems.append(
            f"'mitigate.methods' {list(p.mitigate.methods)} must be among 'methods' "
            f"{list(p.methods)}: a mitigated run is compared with its plain method (or set "
            "'mitigations: []')"
        )
    return problems + check_task_params(p)


def check_task_params(p: Params) -> list[str]:
    """Problems of ``data.task`` with the other sections (see :mod:`fairxray.adapt.fit.task`).

    Under multilabel the mitigations are refused: their hooks and rules are per-row
    cross-entropy over one class per row (group x class cells, a worst group's accuracy, the
    group thresholds of a single argmax); the BCE forms are not built."""
    from fairxray.adapt.fit.task import task_problems

    task, t = p.data.task, p.train
    problems = task_problems(task, t.selection, t.class_balanced, "train.selection")
    problems += task_problems(task, p.tune.objective, False, "tune.objective")
    if task != "multilabel":
        return problems
    if p.mitigations:
        problems.append(
            f"'mitigations' {list(p.mitigations)}: mitigations are multi-class only; with "
            "data.task multilabel set 'mitigations: []'"
        )
    return problems + _protocol_targets(p)


def _protocol_targets(p: Params) -> list[str]:
    """Multilabel: every ``data.classes`` label needs its ``y_<Class>`` split column. Checked on
    the split files when ``prepare`` has written them, else against the dataset's labels."""
    from fairxray import paths
    from fairxray.data.tables import label_column

    protocol, classes = p.data.protocol, list(p.data.classes)
    wanted = [label_column(c) for c in classes]
    first = paths.split_file(protocol, "train")
    if first.exists():
        import pyarrow.parquet as pq

        have = set(pq.read_schema(first).names)
        missing = [c for c in wanted if c not in have]
        where = str(first)
    else:
        from fairxray.data.registry import for_protocol
        from fairxray.data.splits import NIH  # noqa: F401  (registers every dataset)

        try:
            labels = set(for_protocol(protocol).labels) | {"No Finding"}
        except UserError as exc:
            return [str(exc)]
        missing = [col for c, col in zip(classes, wanted, strict=True) if c not in labels]
        where = f"protocol {protocol!r}'s dataset"
    if not missing:
        return []
    return [
        f"'data.task' multilabel needs a y_<Class> target per label of data.classes; {where} has "
        f"no {missing[0]!r} ({len(missing)} missing): use a multi-label protocol "
        "(e.g. nih-official) or data.task multiclass"
    ]


def check_real_inputs(p: Params) -> tuple[list[str], list[str]]:
    """The paper profile's preflight: (problems, warnings). The demo has no real inputs."""
    if p.is_demo:
        return [], []
    from fairxray.reproduce.checks import preflight

    d = p.data
    result = preflight(
        p,
        Path("."),
        images_dir=Path(d.images_dir) if d.images_dir else None,
        weights_dir=Path(d.weights_dir) if d.weights_dir else None,
        metadata=Path(d.metadata) if d.metadata else None,
        allow_cpu=p.train.device != "cuda",
    )
    return result.problems, result.warnings


def require_valid(p: Params) -> None:
    """The name and section checks of :func:`check` for a stage run on its own (outside
    ``dvc repro``): one numbered :class:`UserError` before the stage creates anything."""
    problems = check_names(p) + check_sections(p)
    if problems:
        raise UserError(_message(p, problems))


def _message(p: Params, problems: list[str]) -> str:
    lines = [f"{p.source}: {len(problems)} problem(s) found before any work was started:"]
    return "\n".join(lines + [f"  {i}. {msg}" for i, msg in enumerate(problems, 1)])


def check(params_path: str | Path = "params.yaml", out: Path = OUTPUT) -> dict:
    """Validate ``params_path``; raise one :class:`UserError` listing every problem (numbered,
    naming the file), else write ``out`` and return its content."""
    out.unlink(missing_ok=True)  # no stale pass survives a failed check
    p = load_params(params_path)  # a ConfigError here is already one line naming the file
    problems = check_names(p) + check_sections(p)
    warnings: list[str] = []
    if not problems:  # the preflight reads the metadata and the weights: only on sane params
        real, warnings = check_real_inputs(p)
        problems += real
    if problems:
        raise UserError(_message(p, problems))
    content = {
        "ok": True,
        "profile": p.profile,
        "checked": [
            "keys, types and ranges",
            "model and method names",
            "train, tune and search spaces",
        ]
        + (["real inputs: images, metadata checksum, weights"] if not p.is_demo else []),
        "warnings": warnings,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, out)
    return content
