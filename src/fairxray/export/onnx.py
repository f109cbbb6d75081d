"""ONNX export: a trained model x method as image -> class probabilities, checked against PyTorch.

The exported graph takes the model's preprocessed input (``ClipModel.preprocess`` of the uint8
cache: float32 ``[batch, C, S, S]``, normalised per the model's ``ImageSpec``, recorded in the
report and in the ONNX metadata) and returns softmax probabilities ``[batch, n_classes]``; the
batch axis is dynamic. What is exported per method:

- ``lora``, ``full_ft``: the adapted image tower + head. LoRA is merged into the base weights
  first: unmerged peft layers on ``nn.MultiheadAttention`` export silently wrong results with the
  legacy exporter and fail with the dynamo one (measured with torch 2.14).
- ``linear_probe``, ``mlp``: the frozen image tower (the weights the ``embed`` stage used) + the
  trained head: the same composition as ``embed`` then ``train``.
- ``zero_shot``: the image tower + the class text embeddings baked in as a constant, then
  ``softmax(logit_scale * cos)``, as :mod:`fairxray.adapt.zero_shot` computes it.

Under ``data.task: multilabel`` the output is one independent probability per label: the sigmoid
of the head's logits (what ``train`` writes), and for zero_shot the pos/neg pair softmax of
:mod:`fairxray.adapt.zero_shot` (both prompt sets' embeddings baked in, cosine rule).

Which seed: the seed of ``params.seeds`` with the best validation score (``train.selection``,
recorded by ``train``; the first such seed on ties). zero_shot has no score and is deterministic:
its first seed. Parity: real cached validation images through onnxruntime and PyTorch, at the
full parity batch and at batch 1 (the dynamic axis); max abs difference above ``export.atol``
fails the stage and writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairxray import paths
from fairxray.config import ExportParams, Params
from fairxray.errors import UserError
from fairxray.hashing import sha256_file

FORMAT = 1
INPUT = "image"
OUTPUT = "probs"
EXPORTERS = ("dynamo", "legacy")


class ProbsModel(nn.Module):
    """Preprocessed images -> class probabilities: ``softmax(head(features(image)))``, or with
    ``multilabel`` the per-label ``sigmoid(head(features(image)))``."""

    def __init__(self, features: nn.Module, head: nn.Module, multilabel: bool = False) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.multilabel = multilabel

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(image))
        if self.multilabel:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)


class ZeroShotProbs(nn.Module):
    """Preprocessed images -> ``softmax(logit_scale * cos(image embedding, class embedding))``
    with the class embeddings as a constant buffer."""

    def __init__(
        self, vision: nn.Module, text_emb: torch.Tensor, logit_scale: float, pairs: bool = False
    ) -> None:
        super().__init__()
        self.vision = vision
        self.register_buffer("text", F.normalize(text_emb.detach().float(), dim=-1).clone())
        self.logit_scale = float(logit_scale)
        self.pairs = pairs  # multilabel: text rows are every label's positive, then negatives

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.vision(image), dim=-1)
        scores = self.logit_scale * (z @ self.text.T)
        if self.pairs:  # softmax over (pos, neg) at pos == sigmoid(pos - neg)
            pos, neg = scores.chunk(2, dim=1)
            return torch.sigmoid(pos - neg)
        return torch.softmax(scores, dim=-1)


def merge_lora(module: nn.Module) -> int:
    """Fold every peft LoRA layer of ``module`` into its base layer and put the plain base layer
    back in its place (peft's ``merge_and_unload`` for adapters injected without a PeftModel).
    Returns the number of layers merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return len(layers)


def _seed_config(model: str, method: str, seed: int) -> dict:
    import yaml

    path = paths.seed_dir(model, method, seed) / "config.yaml"
    if not path.exists():
        raise UserError(f"{path}: missing; run `fairxray train --model {model} --method {method}`")
    return yaml.safe_load(path.read_text())


def choose_seed(model: str, method: str, seeds) -> tuple[int, str]:
    """The seed to export and why (see the module docstring)."""
    configs = {s: _seed_config(model, method, s) for s in seeds}
    scored = {s: c["best_score"] for s, c in configs.items() if c.get("best_score") is not None}
    if not scored:
        return seeds[0], "first seed of params.seeds (no validation score: nothing trained)"
    best = max(scored.values())
    seed = next(s for s in seeds if scored.get(s) == best)
    sel = configs[seed].get("selection")
    return seed, f"best validation {sel} over params.seeds ({best:.6f}; first on ties)"


def build_probs_model(
    model: str, method: str, seed: int, classes, task: str = "multiclass"
) -> tuple[nn.Module, dict]:
    """The image -> probabilities module of one trained seed, on CPU in eval mode, and facts
    for the report (preprocess function, ImageSpec, LoRA layers merged, merge difference)."""
    multilabel = task == "multilabel"
    from fairxray.adapt import zero_shot
    from fairxray.adapt.train import load_trained
    from fairxray.models import create

    sdir = paths.seed_dir(model, method, seed)
    cfg = _seed_config(model, method, seed)
    weights, scale = cfg.get("weights_dir"), cfg.get("model_scale", "full")
    info: dict = {"lora_layers_merged": 0, "model_scale": scale}
    if cfg.get("inputs") == "none":
        clip = create(model, weights, scale).eval()
        if multilabel:
            keys = zero_shot.pair_keys(classes)
            prompts = zero_shot.label_prompts(clip.spec, classes)
            text = zero_shot.text_embeddings(clip, keys, prompts)
        else:
            text = zero_shot.text_embeddings(clip, list(classes))
        out = ZeroShotProbs(clip.vision, text, clip.logit_scale(), pairs=multilabel)
        info.update(preprocess=clip.preprocess, image=clip.spec.image)
    elif cfg.get("inputs") == "embeddings":
        head, _ = load_trained(sdir, weights)
        clip = create(model, weights, scale).eval()
        if cfg.get("in_dim") != clip.spec.embed_dim:
            raise UserError(
                f"{sdir}: the head was trained on {cfg.get('in_dim')}-d embeddings but {model} "
                f"now gives {clip.spec.embed_dim}-d ones; rerun `fairxray embed` and `train`"
            )
        out = ProbsModel(clip.vision, head, multilabel)
        info.update(preprocess=clip.preprocess, image=clip.spec.image)
    else:
        trained, _ = load_trained(sdir, weights)
        info.update(preprocess=trained.preprocess, image=_image_spec(model, scale))
        out = ProbsModel(trained.vision, trained.head, multilabel)
        info["merge"] = True
    return out.eval().float(), info


def _image_spec(model: str, scale: str = "full"):
    from fairxray.models.registry import get_spec

    return get_spec(model, scale).image


def parity_pixels(p: Params, n: int) -> tuple[list[str], np.ndarray]:
    """The first ``n`` distinct validation images of ``data.protocol`` from the image cache."""
    from fairxray.data.cache import ImageCache
    from fairxray.data.splits import load_splits

    val = load_splits(p.data.protocol)["val"]
    ids = list(dict.fromkeys(val["image_id"].astype(str)))[:n]
    if not ids:
        raise UserError(f"{paths.splits(p.data.protocol)}: the val split is empty")
    cache = ImageCache.open(paths.images(p.data.protocol))
    return ids, np.asarray(cache.get(ids))


def torch_probs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).float().numpy()


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, e: ExportParams) -> None:
    """``module`` -> ONNX at ``path`` with a dynamic batch axis; ``onnx.checker`` passes."""
    import onnx

    if e.exporter not in EXPORTERS:
        raise UserError(f"'export.exporter' must be one of {EXPORTERS}, got {e.exporter!r}")
    names = {"input_names": [INPUT], "output_names": [OUTPUT], "opset_version": e.opset}
    if e.exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=65536)
        prog = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes={INPUT: {0: batch}},
            external_data=False,
            verbose=False,
            **names,
        )
        prog.save(str(path))
    else:
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            **names,
        )
    strip_source_info(path)
    onnx.checker.check_model(str(path), full_check=True)


def strip_source_info(path: Path) -> None:
    """Drop the exporters' debug records from ``path`` in place: node doc strings and metadata
    (stack traces and FX node names carry this machine's source file paths, so the same model
    exported from two checkouts would differ). The graph itself is unchanged."""
    import onnx

    model = onnx.load(str(path))

    def clean(graph) -> None:
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.HasField("g"):
                    clean(attr.g)
                for g in attr.graphs:
                    clean(g)
        graph.doc_string = ""
        del graph.metadata_props[:]

    clean(model.graph)
    for fn in model.functions:
        fn.doc_string = ""
        del fn.metadata_props[:]
        for node in fn.node:
            node.doc_string = ""
            del node.metadata_props[:]
    model.doc_string = ""
    onnx.save(model, str(path))


def ort_probs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT], {INPUT: x})[0]


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def report_file(model: str, method: str) -> Path:
    """``models/<model>/<method>/onnx.json``: the export's parity report."""
    return paths.onnx(model, method).with_name("onnx.json")


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def _predictions_check(model, method, seed, ids, probs, classes) -> dict:
    """The exported module against the val predictions ``train`` wrote for the same images:
    shows the exported weights are the evaluated ones (informational: a GPU run under bf16
    autocast differs by more than fp32 rounding)."""
    import pandas as pd

    from fairxray.metrics.predictions import prob_columns

    f = paths.prediction_file(model, method, seed, "val")
    if not f.exists():
        return {"checked": False, "reason": f"{f} missing"}
    df = pd.read_parquet(f).drop_duplicates("image_id").set_index("image_id")
    ref = df.loc[ids, prob_columns(classes)].to_numpy(dtype=np.float64)
    return {
        "checked": True,
        "file": str(f),
        "max_abs_diff": float(np.max(np.abs(ref - probs.astype(np.float64)))),
    }


def _write_checked(module, x, ref, out: Path, e, meta: dict, what: str, n_images: int) -> float:
    """Export to a temp file, stamp ``meta``, check onnxruntime against ``ref`` (full batch and
    batch 1), and only then rename it to ``out``; returns the largest difference."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        export_onnx(module, torch.from_numpy(x[:2]), tmp, e)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
        full = ort_probs(tmp, x)
        one = ort_probs(tmp, x[:1])
        diff = max(float(np.max(np.abs(full - ref))), float(np.max(np.abs(one - ref[:1]))))
        if not np.all(np.isfinite(full)) or diff > e.atol:
            raise UserError(
                f"{what}: onnxruntime differs from PyTorch by {diff:.3g} "
                f"(> export.atol {e.atol:g}) on {n_images} validation images; nothing written"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def export(p: Params, model: str, method: str, log: Callable[[str], None] = print) -> dict:
    """Export ``model`` x ``method``; write ``model.onnx`` and ``onnx.json`` (atomically, only
    when parity holds) and return the report."""
    e = p.export
    if e.parity_images < 2:
        raise UserError(f"{p.source}: 'export.parity_images' must be at least 2")
    classes = list(p.data.classes)
    seed, why = choose_seed(model, method, list(p.seeds))
    module, info = build_probs_model(model, method, seed, classes, p.data.task)
    ids, px = parity_pixels(p, e.parity_images)
    with torch.inference_mode():
        x = info["preprocess"](torch.from_numpy(px)).float().numpy()
    merge_diff = None
    if info.get("merge"):
        before = torch_probs(module, x)
        info["lora_layers_merged"] = merge_lora(module)
        merge_diff = float(np.max(np.abs(torch_probs(module, x) - before)))
    ref = torch_probs(module, x)

    out = paths.onnx(model, method)
    diff = _write_checked(
        module,
        x,
        ref,
        out,
        e,
        {
            "fairxray.model": model,
            "fairxray.method": method,
            "fairxray.seed": str(seed),
            "fairxray.model_scale": info["model_scale"],
            "fairxray.classes": json.dumps(classes),
            "fairxray.preprocessing": json.dumps(asdict(info["image"])),
        },
        f"export {model}/{method}",
        len(ids),
    )

    img = info["image"]
    report = {
        "format": FORMAT,
        "exported": True,
        "model": model,
        "method": method,
        "seed": seed,
        "seed_choice": why,
        "model_scale": info["model_scale"],  # "tiny": a small random build (demo only)
        "exporter": e.exporter,
        "opset": e.opset,
        "input": {
            "name": INPUT,
            "shape": [-1, img.in_channels, img.size, img.size],
            "dtype": "float32",
            "preprocessing": asdict(img),
            "note": "uint8 grayscale -> ClipModel.preprocess (resize, value range, channels, mean/std)",
        },
        "output": {"name": OUTPUT, "shape": [-1, len(classes)], "classes": classes},
        "lora_layers_merged": info["lora_layers_merged"],
        "merge_max_abs_diff": merge_diff,
        "parity": {
            "images": len(ids),
            "source": f"val split of {p.data.protocol}, first {len(ids)} distinct images",
            "batch_sizes": [len(ids), 1],
            "max_abs_diff": diff,
            "atol": e.atol,
            "passed": True,
        },
        "predictions_check": _predictions_check(model, method, seed, ids, ref, classes),
        "onnx_sha256": sha256_file(out),
        "onnx_bytes": out.stat().st_size,
        "versions": _versions(),
    }
    _write_json(report_file(model, method), report)
    pc = report["predictions_check"]
    log(
        f"export {model}/{method} seed {seed}: {out} ({report['onnx_bytes'] / 1e6:.2f} MB), "
        f"max |onnxruntime - torch| {diff:.2e} on {len(ids)} val images (atol {e.atol:g})"
        + (f", vs train's val predictions {pc['max_abs_diff']:.2e}" if pc.get("checked") else "")
    )
    if pc.get("checked") and pc["max_abs_diff"] > e.atol:
        log(
            f"export {model}/{method}: warning: the exported model differs from train's val "
            f"predictions by {pc['max_abs_diff']:.3g} (expected on GPU/bf16 runs only)"
        )
    return report
