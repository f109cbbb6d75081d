"""Typed configuration: one frozen dataclass per ``params.yaml`` section.

``load_params(path)`` is the only place YAML is read. Every key must be known and every field
present: an unknown or missing key is a :class:`ConfigError` naming the key and the file. YAML keys
equal field names. Nested dataclasses map to nested mappings.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PAPER_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax")


class ConfigError(ValueError):
    """A params file that cannot be turned into typed config; the message names file and key."""


@dataclass(frozen=True)
class SyntheticParams:
    """Demo images: a chest-like background plus a class pattern whose amplitude is
    ``signal * age_signal_scale[age bin] * sex_signal_scale[sex]``; Gaussian noise on top."""

    signal: float
    noise: float
    age_signal_scale: tuple[float, ...]  # one factor per age bin, youngest first
    sex_signal_scale: dict[str, float]  # "M"/"F" -> factor


@dataclass(frozen=True)
class RaceParams:
    """Race as a sensitive attribute. A raw value (CheXpert ``PRIMARY_RACE``, MIMIC-IV
    ``admissions.race``) belongs to the first group one of whose prefixes it starts with
    (case-insensitive); a value starting with an ``unknown`` prefix is ``Unknown``; anything else
    is ``other``. Small groups are not merged here: metrics give NaN below min_group_size."""

    groups: dict[str, tuple[str, ...]]  # group label -> raw-value prefixes
    unknown: tuple[str, ...]  # prefixes of "not recorded" values (unknown, declined, ...)
    other: str  # label of every other value


@dataclass(frozen=True)
class CheXpertParams:
    """CheXpert: ``train.csv`` + ``valid.csv`` (v1.0 or v1.0-small), optional CHEXPERT DEMO."""

    root: str | None  # folder holding train.csv and valid.csv; None = protocol unusable
    demo_table: str | None  # CHEXPERT DEMO as CSV (race, ethnicity); None = no race columns
    uncertain: str  # the -1 labels: "ones" (U-ones), "zeros" (U-zeros), "ignore" (NaN, masked)
    frontal_only: bool  # keep Frontal images only (laterals are dropped and counted)
    val_fraction: float  # chexpert-patient: share of patients in val
    test_fraction: float  # chexpert-patient: share of patients in test


@dataclass(frozen=True)
class MimicParams:
    """MIMIC-CXR-JPG 2.0.0 tables joined with MIMIC-IV ``patients`` and ``admissions``."""

    root: str | None  # folder with mimic-cxr-2.0.0-{metadata,chexpert,split}.csv(.gz)
    mimic_iv_dir: str | None  # MIMIC-IV hosp/ folder with patients.csv(.gz), admissions.csv(.gz)
    uncertain: str  # "ones" | "zeros" | "ignore", as for CheXpert
    views: tuple[str, ...]  # ViewPosition values kept, e.g. [PA, AP]


@dataclass(frozen=True)
class DataParams:
    metadata: str | None  # NIH Data_Entry_2017_v2020.csv(.gz); None = torchxrayvision's copy
    images_dir: str | None  # NIH PNG folder; None = synthetic demo images
    weights_dir: str | None  # one sub-folder per model; None = random init (demo only)
    official_lists_dir: str | None  # train_val_list.txt / test_list.txt, for nih-official
    protocols: tuple[str, ...]  # every protocol `prepare` builds
    protocol: str  # the protocol the model grid trains and evaluates on
    classes: tuple[str, ...]  # 6x200 protocols: diseases in class-index order
    age_bins: tuple[int, ...]  # left-closed edges in years: [0, 60, 100] -> 0-59, 60-99
    per_cell: int  # images drawn per disease x age group x sex cell
    n_val: int  # per cell
    n_test: int  # per cell
    seed: int  # sampling and split seed (the paper: 42)
    official_val_fraction: float  # nih-official, nih-demo-official: share of train_val patients in val
    # "multiclass": one label per image (label_idx, softmax; the 6x200 protocols). "multilabel":
    # data.classes are independent targets (y_<Class> 0/1 columns, per-label sigmoid/BCE).
    task: str = "multiclass"
    # nih-demo-official: about this many images, whole patients drawn at random and then split in
    # the official proportions (a CPU-sized demo); None = every image of the metadata.
    demo_official_images: int | None = None
    race: RaceParams | None = None  # CheXpert / MIMIC: raw race strings -> analysed groups
    chexpert: CheXpertParams | None = None  # protocols chexpert-*
    mimic: MimicParams | None = None  # protocol mimic-official


@dataclass(frozen=True)
class ImagesParams:
    size: int  # side of the square uint8 cache
    min_source_size: int  # a source image whose shorter side is below this is a bad file
    on_error: str  # "fail": one error listing every bad file; "skip": drop and list them
    workers: int  # decode processes; 0 = all cores
    synthetic: SyntheticParams


@dataclass(frozen=True)
class MetricsParams:
    sensitive: tuple[str, ...]  # split columns treated as sensitive attributes
    n_boot: int  # patient-level bootstrap resamples; 0 disables intervals
    ci_level: float
    ece_bins: int
    min_group_size: int  # smaller groups give NaN plus a warning
    seed: int
    n_perm: int  # permutations of the sensitive values across patients per gap null; 0 = none
    correction: str  # holm | bh: p-value adjustment within each table row (one cell's gaps)
    alpha: float  # significance level of the adjusted p-values and of the MDE
    mde_power: float  # power at which the minimum detectable effect is reported
    reference_method: str  # paired comparisons: each method vs this one, same model
    reference_model: str | None  # and each model vs this one, same method; null = first model
    # multilabel: per-label decision thresholds, chosen on validation only. "max_f1" or
    # "sensitivity" (the highest threshold whose validation sensitivity reaches target_sensitivity).
    threshold_rule: str = "max_f1"
    target_sensitivity: float = 0.8


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str
    experiment: str


@dataclass(frozen=True)
class AugmentParams:
    """Training augmentation of image-based methods, as batched tensor ops on the device.
    The paper: RandomVerticalFlip(0.3), RandomHorizontalFlip(0.3), RandomRotation(15),
    ColorJitter(0.2, 0.2, 0.2) (saturation is a no-op on grayscale, so it is left out)."""

    flip_p: float  # probability of each flip, horizontal and vertical independently
    rotation_deg: float  # rotation angle drawn uniformly from [-deg, deg]
    jitter: float  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters of ``fairxray.adapt.fit``; ``tuned/<model>/<method>.yaml`` overrides them.
    The paper's released code: AdamW lr 1e-4, weight decay 1e-5, batch 64, 100 epochs,
    CosineAnnealingWarmRestarts(T_0=10) stepped per batch, seed 77, head width 1024, LoRA rank 16
    alpha 1 (ViT) / rank 4 (ResNet convs), selection on the lowest validation loss."""

    epochs: int
    batch_size: int
    lr: float
    backbone_lr_scale: float  # full_ft: backbone lr = lr * scale (1.0 = one learning rate)
    weight_decay: float
    scheduler: str  # "cosine" (one cycle over all steps) | "cosine_warm_restarts"
    t0: int  # cosine_warm_restarts: first period in optimizer steps (the paper: 10)
    head: str  # "paper" (two stacked linears) | "linear"; mlp always uses its MLP head
    head_hidden: int  # hidden width of the paper's heads (the paper: 1024)
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    # "model": each model's released-code LoRA (ModelSpec.lora: rank 16 ViT / 4 ResNet, scale 1);
    # "train": lora_rank and scale lora_alpha / lora_rank for every model (what tuning varies);
    # "equal_budget": per-model rank giving about lora_budget adapter parameters, the model's scale
    lora_config: str
    lora_budget: int  # equal_budget: target adapter parameters per model
    # zero_shot: "model" (each model's upstream rule, ModelSpec.zero_shot) | "cosine_softmax"
    zero_shot_rule: str
    # linear_probe / mlp: K augmented views (train.augment) of every training image, encoded
    # once by `embed` beside the plain embeddings; each epoch draws one view per image. 0 = none.
    frozen_augment_views: int
    patience: int  # epochs without validation improvement before stopping; 0 = never stop
    augment: AugmentParams
    class_balanced: bool  # sample training batches with equal expected counts per class
    selection: str  # validation score that picks the epoch: "macro_f1" | "accuracy" | "neg_loss"
    device: str  # "auto" | "cpu" | "cuda"
    num_threads: int  # torch CPU threads; 0 = leave torch's default
    embed_batch_size: int  # batch size of the `embed` stage and of evaluation passes
    # Mitigation hyperparameters (read only by the run's mitigation; see fairxray.mitigate)
    dro_step: float  # group_dro: step size eta of the exponentiated group-weight update
    adversary_weight: float  # adversarial: lambda of the gradient reversal layer
    adversary_hidden: int  # adversarial: hidden width of the adversary head


@dataclass(frozen=True)
class TuneParams:
    """Optuna studies of ``fairxray tune``, one per model x method named ``<model>/<method>``.

    ``space``: method -> train parameter (a ``TrainParams`` field; dotted ``augment.x`` allowed)
    -> ``{low, high, log}`` (an int or float range by the field's type) or ``{choices: [...]}``.
    A method without an entry (zero_shot) has nothing to tune."""

    n_trials: int  # finished (complete or pruned) trials per study; a rerun runs only the rest
    seed: int  # TPE sampler seed (workers and resumed runs derive their own from it)
    startup_trials: int  # TPE: random trials before its model takes over
    pruner: str  # "median" | "none": stop a trial whose val score is below the median so far
    pruner_startup_trials: int  # finished trials before any trial may be pruned
    pruner_warmup_epochs: int  # epochs a trial runs before it may be pruned
    objective: str  # maximised on validation: "macro_f1" | "accuracy" | "neg_loss"
    multi_objective: bool  # also minimise ``fairness_key`` on validation; keeps the Pareto front
    fairness_key: str  # an evaluate metric key computed on val, e.g. f1_gap/age_group/standard
    max_cost: float  # multi-objective: fairest Pareto trial at most this far below the best objective
    storage: str | None  # None = sqlite:///studies/optuna.db; postgresql://... shares studies
    space: dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class ExportParams:
    """``fairxray export``: image -> class probabilities as ONNX, checked against PyTorch."""

    opset: int
    exporter: str  # "dynamo" (torch.export, needs onnxscript) | "legacy" (TorchScript tracing)
    atol: float  # max abs difference of probabilities, onnxruntime vs PyTorch; above it the stage fails
    parity_images: int  # real cached validation images compared


@dataclass(frozen=True)
class MitigateParams:
    """The mitigation grid: every entry of ``mitigations`` crossed with ``methods`` (runs named
    ``<method>+<mitigation>``); their hyperparameters are train keys (``train.dro_step`` ...)."""

    methods: tuple[str, ...]  # trainable methods the mitigations are applied to
    attribute: str  # the sensitive column (one of metrics.sensitive) the mitigations act on
    threshold_constraint: str  # group_threshold, two classes: fairlearn's constraint


@dataclass(frozen=True)
class Params:
    profile: str  # "demo" or "paper"; shown on every output
    data: DataParams
    images: ImagesParams
    models: tuple[str, ...]
    methods: tuple[str, ...]
    mitigations: tuple[str, ...]  # applied on top of the plain grid (none = the grid itself)
    seeds: tuple[int, ...]
    metrics: MetricsParams
    mlflow: MlflowParams
    train: TrainParams
    tune: TuneParams
    export: ExportParams
    mitigate: MitigateParams
    # "full": the published architectures; "tiny": every family's tiny random build (same
    # upstream classes, few narrow layers, 32-64 px) so the demo runs any model on a CPU.
    model_scale: str = "full"
    # The params file these were read from (not a YAML key): errors name it.
    source: str = dataclasses.field(default="params.yaml", compare=False, metadata={"yaml": False})

    @property
    def is_demo(self) -> bool:
        return self.profile == "demo"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, where: str, src: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, src)
    if _is_dataclass_type(tp):
        return _build(tp, value, where, src)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{src}: '{where}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{i}]", src) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{where}' must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            _convert(k, kt, where, src): _convert(v, vt, f"{where}.{k}", src)
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{src}: '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{src}: '{where}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: '{where}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{src}: '{where}' must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: Any, where: str, src: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: section '{where or '<top>'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{src}: unknown key '{prefix}{unknown[0]}'")
    missing = sorted(
        n
        for n, f in fields.items()
        if n not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ConfigError(f"{src}: missing key '{prefix}{missing[0]}'")
    kwargs = {n: _convert(raw[n], hints[n], f"{prefix}{n}", src) for n in fields if n in raw}
    return cls(**kwargs)


def parse_params(raw: Any, src: str = "<params>") -> Params:
    p = dataclasses.replace(_build(Params, raw, "", src), source=src)
    _validate(p, src)
    _validate_ranges(p, src)
    return p


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_params(raw, str(path))


TASKS = ("multiclass", "multilabel")
MODEL_SCALES = ("full", "tiny")  # = fairxray.models.spec.MODEL_SCALES
THRESHOLD_RULES = ("max_f1", "sensitivity")


def _validate(p: Params, src: str) -> None:
    d = p.data
    if d.per_cell < 1:
        raise ConfigError(f"{src}: 'data.per_cell' must be at least 1, got {d.per_cell!r}")
    if p.profile not in ("demo", "paper"):
        raise ConfigError(f"{src}: 'profile' must be 'demo' or 'paper', got {p.profile!r}")
    if d.protocol not in d.protocols:
        raise ConfigError(f"{src}: 'data.protocol' {d.protocol!r} is not in data.protocols")
    bins = d.age_bins
    if len(bins) < 3 or list(bins) != sorted(set(bins)):
        raise ConfigError(f"{src}: 'data.age_bins' must be at least 3 increasing edges, got {bins}")
    if len(p.images.synthetic.age_signal_scale) != len(bins) - 1:
        raise ConfigError(
            f"{src}: 'images.synthetic.age_signal_scale' needs one factor per age bin "
            f"({len(bins) - 1}), got {len(p.images.synthetic.age_signal_scale)}"
        )
    if d.n_val + d.n_test >= d.per_cell:
        raise ConfigError(f"{src}: 'data.n_val' + 'data.n_test' must be below 'data.per_cell'")
    if p.images.on_error not in ("fail", "skip"):
        raise ConfigError(f"{src}: 'images.on_error' must be 'fail' or 'skip'")
    if p.model_scale not in MODEL_SCALES:
        raise ConfigError(
            f"{src}: 'model_scale' must be one of {MODEL_SCALES}, got {p.model_scale!r}"
        )
    if p.model_scale == "tiny" and (p.profile == "paper" or d.weights_dir is not None):
        raise ConfigError(
            f"{src}: 'model_scale' tiny builds small random models for the demo only; it cannot "
            "be used with the paper profile or with 'data.weights_dir' set (use model_scale: full)"
        )
    if p.profile == "paper" and (d.images_dir is None or d.weights_dir is None):
        raise ConfigError(
            f"{src}: the paper profile needs 'data.images_dir' and 'data.weights_dir' set"
        )
    for name, ds in (("chexpert", d.chexpert), ("mimic", d.mimic)):
        if ds is not None and ds.uncertain not in ("ones", "zeros", "ignore"):
            raise ConfigError(
                f"{src}: 'data.{name}.uncertain' must be ones, zeros or ignore, got {ds.uncertain!r}"
            )
    if not 0 < p.metrics.ci_level < 1:
        raise ConfigError(f"{src}: 'metrics.ci_level' must lie in (0, 1)")
    if p.metrics.correction not in ("holm", "bh"):
        raise ConfigError(f"{src}: 'metrics.correction' must be 'holm' or 'bh'")
    if not (0 < p.metrics.alpha < 1 and 0 < p.metrics.mde_power < 1):
        raise ConfigError(f"{src}: 'metrics.alpha' and 'metrics.mde_power' must lie in (0, 1)")
    if d.task not in TASKS:
        raise ConfigError(f"{src}: 'data.task' must be one of {', '.join(TASKS)}, got {d.task!r}")
    if p.metrics.threshold_rule not in THRESHOLD_RULES:
        raise ConfigError(
            f"{src}: 'metrics.threshold_rule' must be one of {', '.join(THRESHOLD_RULES)}, "
            f"got {p.metrics.threshold_rule!r}"
        )
    if not 0 < p.metrics.target_sensitivity < 1:
        raise ConfigError(f"{src}: 'metrics.target_sensitivity' must lie in (0, 1)")
    if p.metrics.n_perm < 0:
        raise ConfigError(f"{src}: 'metrics.n_perm' must be 0 or more")

    if "none" in p.mitigations:
        raise ConfigError(
            f"{src}: 'mitigations' lists what is applied on top of the plain grid; leave out "
            "'none' (the runs of 'methods' are the none baseline)"
        )
    if p.mitigate.attribute not in p.metrics.sensitive:
        raise ConfigError(
            f"{src}: 'mitigate.attribute' {p.mitigate.attribute!r} is not in metrics.sensitive"
        )


EXPORTERS = ("dynamo", "legacy")  # export/onnx.py's exporters
# Below this a draw of whole patients rarely gives val a positive of every NIH finding (Hernia:
# 0.2 % of images); prepare reports when no draw does.
MIN_DEMO_OFFICIAL_IMAGES = 500

# Names that go into DVC stage commands, paths and MLflow: letters, digits, '.', '_', '-' only.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _validate_ranges(p: Params, src: str) -> None:
    """Types are checked while building; these are the ranges a stage would otherwise trip over
    later (with a traceback, NaN intervals or an exit 0 having done nothing)."""
    d, im, m, ex = p.data, p.images, p.metrics, p.export
    checks = [
        (d.per_cell >= 1, "data.per_cell", d.per_cell, "must be at least 1"),
        (d.n_val >= 1, "data.n_val", d.n_val, "must be at least 1"),
        (d.n_test >= 1, "data.n_test", d.n_test, "must be at least 1"),
        (len(d.classes) >= 2, "data.classes", list(d.classes), "needs at least 2 classes"),
        (len(set(d.classes)) == len(d.classes), "data.classes", list(d.classes), "has repeats"),
        (
            0 < d.official_val_fraction < 1,
            "data.official_val_fraction",
            d.official_val_fraction,
            "must lie in (0, 1)",
        ),
        (
            d.demo_official_images is None or d.demo_official_images >= MIN_DEMO_OFFICIAL_IMAGES,
            "data.demo_official_images",
            d.demo_official_images,
            f"must be null (all images) or at least {MIN_DEMO_OFFICIAL_IMAGES}",
        ),
        (im.size >= 8, "images.size", im.size, "must be at least 8 px"),
        (im.min_source_size >= 1, "images.min_source_size", im.min_source_size, "must be >= 1"),
        (im.workers >= 0, "images.workers", im.workers, "must be non-negative (0 = all cores)"),
        (im.synthetic.noise >= 0, "images.synthetic.noise", im.synthetic.noise, "must be >= 0"),
        (len(p.models) >= 1, "models", list(p.models), "needs at least one model"),
        (len(p.methods) >= 1, "methods", list(p.methods), "needs at least one method"),
        (len(p.seeds) >= 1, "seeds", list(p.seeds), "needs at least one seed"),
        (len(set(p.seeds)) == len(p.seeds), "seeds", list(p.seeds), "has repeats"),
        (all(s >= 0 for s in p.seeds), "seeds", list(p.seeds), "must be non-negative"),
        (m.n_boot == 0 or m.n_boot >= 2, "metrics.n_boot", m.n_boot, "must be 0 (off) or >= 2"),
        (m.ece_bins >= 1, "metrics.ece_bins", m.ece_bins, "must be at least 1"),
        (m.min_group_size >= 1, "metrics.min_group_size", m.min_group_size, "must be >= 1"),
        (len(m.sensitive) >= 1, "metrics.sensitive", list(m.sensitive), "needs a column"),
        (ex.opset >= 7, "export.opset", ex.opset, "must be at least 7"),
        (ex.exporter in EXPORTERS, "export.exporter", ex.exporter, f"must be one of {EXPORTERS}"),
        (ex.atol > 0, "export.atol", ex.atol, "must be positive"),
        (ex.parity_images >= 2, "export.parity_images", ex.parity_images, "must be at least 2"),
    ]
    for ok, key, value, what in checks:
        if not ok:
            raise ConfigError(f"{src}: '{key}' {what}, got {value!r}")
    named = (("models", p.models), ("methods", p.methods), ("data.protocols", d.protocols))
    for key, names in named:
        for i, name in enumerate(names):
            if not SAFE_NAME.match(name):
                raise ConfigError(
                    f"{src}: '{key}[{i}]' {name!r} is not a safe name (letters, digits, '.', '_', "
                    "'-'; it goes into stage commands and paths)"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"{src}: '{key}' has repeats: {list(names)}")
    for i, value in enumerate(im.synthetic.age_signal_scale):
        if value < 0:
            raise ConfigError(f"{src}: 'images.synthetic.age_signal_scale[{i}]' must be >= 0")
