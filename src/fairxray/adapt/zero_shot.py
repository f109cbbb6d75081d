"""Zero-shot classification: class scores from each model's prompt set and decision rule, then a
softmax over the classes (rows sum to 1: the 6x200 protocols are single-label).

Prompts. No upstream model ships NIH ChestX-ray14 prompts and the paper's are unknown, so each
prompt set below is this project's documented choice, with its source in ``PROMPT_SOURCES``: NIH
label -> natural-language name (as KAD does: Effusion -> "pleural effusion"), then the model's
templates (``ModelSpec.prompt_style``).

Rules (``ModelSpec.zero_shot``; ``train.zero_shot_rule: cosine_softmax`` forces the first):

- ``cosine_softmax``: class embedding = mean of the L2-normalised prompt embeddings, re-normalised
  (CLIP's prompt ensembling); ``softmax(logit_scale * cos)``, the logit scale from the model's
  weights where it has one (CLIP, BiomedCLIP, MedCLIP), GLoRIA's temperature 10 otherwise.
- ``medclip_prompt_mean`` (MedCLIP's ``PromptClassifier`` with ensembling): each class's prompts
  tokenised together and averaged over the padding too; ``logit_scale * cos`` averaged over the
  class's prompts; softmax.
- ``gloria_local_global`` (GLoRIA's ``zero_shot_classification``): per prompt, the mean of the
  global cosine and the local word-region similarity (words attend over the 19 x 19 regions,
  temperatures 4 and 5); the maximum over the class's prompts; each class's column standardised
  over the scored images (mean 0, sd 1, as upstream does over its evaluation batch; no labels
  used); softmax of the standardised scores (upstream stops at the argmax, which is unchanged).

Multi-label (``data.task: multilabel``; an extension: the paper is multi-class only). Each label
gets an independent probability from a positive and a negative prompt set, the pairing CheXzero
introduced for chest X-rays (Tiu et al., Nat. Biomed. Eng. 2022: ``"{}"`` against ``"no {}"``,
probability ``exp(pos) / (exp(pos) + exp(neg))``). Here the positive set is the multi-class prompt
set of the label (:func:`class_prompts`); the negative set is the same templates filled with
``"no <natural name>"`` (:func:`negative_name`), except for ``No Finding``, whose positive name is
already a negative finding: its negative is ``"acute cardiopulmonary findings"``. Each set is
scored by the model's own rule as if it were a class (cosine or MedCLIP: at the model's logit
scale; GLoRIA: the standardised scores), and

    p(label) = softmax(score_pos, score_neg)[0] = 1 / (1 + exp(score_neg - score_pos)).

One departure from CheXzero: upstream scores the raw cosine (scale 1); here the scores carry the
model's logit scale (CLIP-like models are trained with it, and it is what the multi-class path
uses), so the probabilities are sharper and the ranking, hence every AUROC, is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fairxray.adapt.store import encode_cache
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError
from fairxray.models.base import ClipModel
from fairxray.models.registry import ModelSpec

NATURAL_NAMES = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Infiltration": "pulmonary infiltrate",
    "Mass": "lung mass",
    "Nodule": "lung nodule",
    "Pneumonia": "pneumonia",
    "Emphysema": "emphysema",
    "Fibrosis": "pulmonary fibrosis",
    "Pleural_Thickening": "pleural thickening",
    "Hernia": "hiatal hernia",
    "No Finding": "no acute cardiopulmonary findings",
}

# prompt_style -> templates ("{}" = natural name). Chosen per training-text style of the family:
PROMPT_SCHEMES: dict[str, tuple[str, ...]] = {
    # toy: one plain template; the demo only needs the mechanics.
    "template": ("a chest x-ray showing {}",),
    # OpenAI CLIP was trained on web captions: caption-like CXR templates, ensembled.
    "clip_ensemble": (
        "a chest x-ray showing {}.",
        "a chest radiograph with {}.",
        "a photo of a chest x-ray with {}.",
        "an x-ray image of the chest showing {}.",
    ),
    # BiomedCLIP: the model card's template, plus its CXR label style ("... chest x-ray").
    "biomedclip": (
        "this is a photo of {}",
        "{} chest x-ray",
        "chest x-ray showing {}",
    ),
    # Image-only models (ModelSpec.text_tower False): no text tower, no prompts.
    "none": (),
    # CheXzero: its positive template is the bare finding name ("{}" vs "no {}" upstream).
    "chexzero": ("{}",),
    # GLoRIA drops one-word sentences (upstream process_text), so a bare "{}" would encode as
    # [CLS] [SEP] for single-word names: report-style sentences of two words or more only.
    "gloria": (
        "findings consistent with {}.",
        "there is {}.",
        "the chest radiograph shows {}.",
        "evidence of {}.",
    ),
    # MedCLIP was trained on radiology report sentences: report-style findings.
    "report_ensemble": (
        "{}",
        "findings consistent with {}.",
        "there is {}.",
        "the chest radiograph shows {}.",
        "evidence of {}.",
    ),
}


PROMPT_SOURCES = {
    "template": "fairxray (toy model: mechanics only)",
    "clip_ensemble": "fairxray, after CLIP's prompt-ensembling practice (Radford et al. 2021)",
    "biomedclip": "BiomedCLIP model card template 'this is a photo of {}', plus CXR variants",
    "gloria": "fairxray report-style sentences; GLoRIA's own CheXpert prompts cover 5 CheXpert "
    "classes (no pneumothorax), not NIH's 6",
    "report_ensemble": "fairxray report-style sentences; MedCLIP's own prompt generator "
    "covers CheXpert/COVID classes, not NIH's 6",
    "chexzero": "CheXzero's positive template, the bare finding name (upstream pairs it with "
    "'no {}'; here positives across classes)",
    "none": "image-only model: no prompts",
}
ZERO_SHOT_RULES = ("cosine_softmax", "medclip_prompt_mean", "gloria_local_global")
GLORIA_TEMP_ATTENTION = 4.0  # upstream attention_fn temperature over regions
GLORIA_TEMP_WORDS = 5.0  # upstream local similarity: exp(5 cos), max over words, log


def rule_for(spec: ModelSpec, override: str = "model") -> str:
    """The rule a model is scored with: its own (``ModelSpec.zero_shot``) unless overridden."""
    if override not in ("model", "cosine_softmax"):
        raise ValueError(f"zero_shot_rule must be 'model' or 'cosine_softmax', got {override!r}")
    rule = spec.zero_shot or "cosine_softmax"
    if rule not in ZERO_SHOT_RULES:
        raise ValueError(f"{spec.name}: zero_shot {rule!r} not in {ZERO_SHOT_RULES}")
    return "cosine_softmax" if override == "cosine_softmax" else rule


def require_text_tower(spec: ModelSpec) -> None:
    """Image-only models (``spec.text_tower`` False, e.g. RAD-DINO) have no zero-shot method."""
    if not spec.text_tower:
        raise UserError(
            f"model '{spec.name}' is image-only (no text tower): the zero_shot method is not "
            "available for it; remove zero_shot from `methods` or the model from `models`"
        )


def natural_name(label: str) -> str:
    return NATURAL_NAMES.get(label, label.replace("_", " ").lower())


# Multi-label negatives that are not "no <natural name>".
NEGATIVE_NAMES = {"No Finding": "acute cardiopulmonary findings"}
POSITIVE, NEGATIVE = "pos", "neg"


def negative_name(label: str) -> str:
    """The finding text of ``label``'s negative prompt set (multi-label zero-shot)."""
    return NEGATIVE_NAMES.get(label, f"no {natural_name(label)}")


def pair_keys(classes: Sequence[str]) -> list[str]:
    """Pseudo-classes of the pos/neg prompt sets: every label's positive, then every negative."""
    return [f"{c}|{POSITIVE}" for c in classes] + [f"{c}|{NEGATIVE}" for c in classes]


def label_prompts(spec: ModelSpec, classes: Sequence[str]) -> dict[str, list[str]]:
    """:func:`pair_keys` -> prompts: the positive set is :func:`class_prompts`'s, the negative
    set the same templates filled with :func:`negative_name`."""
    pos = class_prompts(spec, classes)
    templates = PROMPT_SCHEMES[spec.prompt_style]
    out = {f"{c}|{POSITIVE}": pos[c] for c in classes}
    out.update(
        {f"{c}|{NEGATIVE}": [t.format(negative_name(c)) for t in templates] for c in classes}
    )
    return out


def pair_probs(scores: torch.Tensor) -> np.ndarray:
    """``[N, 2L]`` scores in :func:`pair_keys` order -> float64 ``[N, L]``: per label, the
    softmax over its (positive, negative) pair, taken at the positive."""
    pos, neg = scores.double().chunk(2, dim=1)
    return torch.softmax(torch.stack([pos, neg], dim=-1), dim=-1)[..., 0].numpy()


def class_prompts(spec: ModelSpec, classes: Sequence[str]) -> dict[str, list[str]]:
    """Class -> the prompts whose embeddings are averaged for it, per ``spec.prompt_style``."""
    require_text_tower(spec)
    try:
        templates = PROMPT_SCHEMES[spec.prompt_style]
    except KeyError:
        raise ValueError(
            f"{spec.name}: prompt_style {spec.prompt_style!r} not in {sorted(PROMPT_SCHEMES)}"
        ) from None
    return {c: [t.format(natural_name(c)) for t in templates] for c in classes}


def text_embeddings(
    model: ClipModel, classes: Sequence[str], prompts: dict[str, list[str]] | None = None
) -> torch.Tensor:
    """L2-normalised class embeddings ``[n_classes, embed_dim]`` (prompt ensembles averaged);
    ``prompts`` (class -> prompts) replaces :func:`class_prompts` (e.g. :func:`label_prompts`)."""
    prompts = prompts if prompts is not None else class_prompts(model.spec, classes)
    with torch.inference_mode():
        out = []
        for c in classes:
            z = model.encode_text(prompts[c], normalize=True)
            out.append(F.normalize(z.mean(0), dim=-1))
    return torch.stack(out)


def probs_from_embeddings(
    image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """``softmax(logit_scale * cos(image, class))`` ``[B, n_classes]``; inputs need not be unit."""
    img = torch.as_tensor(image_emb, dtype=torch.float32, device=text_emb.device)
    cos = F.normalize(img, dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
    return torch.softmax(logit_scale * cos, dim=-1)


def zero_shot_probs(
    model: ClipModel,
    images: torch.Tensor,
    classes: Sequence[str] | None = None,
    *,
    text_emb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class probabilities for preprocessed ``images`` ``[B, C, S, S]``; give ``classes`` or
    precomputed ``text_emb`` (from :func:`text_embeddings`)."""
    if text_emb is None:
        if classes is None:
            raise ValueError("zero_shot_probs needs classes or text_emb")
        text_emb = text_embeddings(model, classes)
    with torch.inference_mode():
        img = model.encode_image(images, normalize=True)
    return probs_from_embeddings(img, text_emb.to(img.device), model.logit_scale())


def _medclip_logits(model, emb: np.ndarray, prompts: dict[str, list[str]], classes) -> torch.Tensor:
    img = F.normalize(torch.as_tensor(emb, dtype=torch.float32), dim=-1)
    out = []
    with torch.inference_mode():
        for c in classes:
            txt = model.encode_text_padded(prompts[c]).float().cpu()
            out.append((model.logit_scale() * img @ txt.T).mean(1))
    return torch.stack(out, 1)


def _attend(words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """GLoRIA's attention: word vectors ``[B, H, W]`` over region vectors ``[B, H, R]``:
    softmax over words, then (x 4) softmax over regions -> weighted region context ``[B, H, W]``."""
    attn = torch.softmax(torch.bmm(regions.transpose(1, 2), words), dim=-1)  # [B, R, W]
    attn = torch.softmax(attn.transpose(1, 2) * GLORIA_TEMP_ATTENTION, dim=-1)  # [B, W, R]
    return torch.bmm(regions, attn.transpose(1, 2))


def gloria_similarities(local: torch.Tensor, glob: torch.Tensor, words, sent, cap_lens):
    """``(local + global) / 2`` for images x prompts ``[B, P]`` (upstream get_similarities)."""
    g = F.normalize(glob, dim=-1) @ F.normalize(sent, dim=-1).T
    regions = local.flatten(2)  # [B, H, R]
    cols = []
    for i, n in enumerate(cap_lens):
        w = words[i, :, 1 : n + 1].unsqueeze(0).expand(len(local), -1, -1)  # [B, H, W]
        ctx = _attend(w, regions)
        num = (w * ctx).sum(1)
        cos = num / (w.norm(dim=1) * ctx.norm(dim=1)).clamp_min(1e-8)
        cols.append((cos * GLORIA_TEMP_WORDS).exp().max(1).values.log())
    return (torch.stack(cols, 1) + g) / 2


def _gloria_logits(model, cache, ids, prompts, classes, batch_size, dev) -> torch.Tensor:
    from fairxray.adapt.store import iter_pixels

    model.to(dev).eval()
    with torch.inference_mode():
        texts = {c: model.word_embeddings(prompts[c]) for c in classes}
        rows = []
        for px in iter_pixels(cache, ids, batch_size, dev):
            local, glob = model.vision.local_global(model.preprocess(px))
            rows.append(
                torch.stack(
                    [gloria_similarities(local, glob, *texts[c]).max(1).values for c in classes],
                    1,
                ).cpu()
            )
    scores = torch.cat(rows)
    if len(scores) > 1:  # upstream: standardise each class over the scored images (numpy sd)
        scores = (scores - scores.mean(0)) / scores.std(0, correction=0)
    return scores


def class_logits(
    model: ClipModel,
    cache: ImageCache,
    image_ids: Sequence[str],
    classes: Sequence[str],
    rule: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    prompts: dict[str, list[str]] | None = None,
) -> torch.Tensor:
    """``[N, n_classes]`` scores whose softmax are the zero-shot probabilities under ``rule``;
    ``prompts`` (class -> prompts) replaces :func:`class_prompts`."""
    prompts = prompts if prompts is not None else class_prompts(model.spec, classes)
    dev = torch.device(device) if device is not None else model.device
    if rule == "gloria_local_global":
        return _gloria_logits(model, cache, list(image_ids), prompts, classes, batch_size, dev)
    emb = encode_cache(model, cache, list(image_ids), batch_size, dev)
    if rule == "medclip_prompt_mean":
        return _medclip_logits(model, emb, prompts, classes)
    text = text_embeddings(model, classes, prompts).cpu()
    img = F.normalize(torch.as_tensor(emb, dtype=torch.float32), dim=-1)
    return model.logit_scale() * img @ text.float().T


def predictions(
    model: ClipModel,
    cache: ImageCache,
    split: pd.DataFrame,
    classes: Sequence[str],
    sensitive: Sequence[str] = ("age_group", "sex"),
    batch_size: int = 64,
    device: str | torch.device | None = None,
    rule: str = "model",
    task: str = "multiclass",
) -> pd.DataFrame:
    """Zero-shot predictions for one split, in the predictions contract (docs/architecture.md):
    ``image_id, patient_id, label_idx, prob_<Class>..., <sensitive columns>``. ``rule``: "model"
    (the model's own, ``ModelSpec.zero_shot``) or "cosine_softmax". ``task`` multilabel: one
    independent probability per label from its pos/neg prompt pair (:func:`pair_probs`) and the
    split's ``y_<Class_Name>`` targets."""
    from fairxray.adapt.fit.inputs import split_targets
    from fairxray.metrics.predictions import target_columns

    ids = split["image_id"].tolist()
    rule = rule_for(model.spec, rule)
    if task == "multilabel":
        keys = pair_keys(classes)
        scores = class_logits(
            model, cache, ids, keys, rule, batch_size, device, label_prompts(model.spec, classes)
        )
        probs = pair_probs(scores.cpu())
    else:
        logits = class_logits(model, cache, ids, classes, rule, batch_size, device)
        probs = torch.softmax(logits.double(), dim=-1).numpy()
    out = split[["image_id", "patient_id", "label_idx"]].reset_index(drop=True).copy()
    for j, c in enumerate(classes):
        out[f"prob_{c}"] = probs[:, j].astype(np.float64)
    if task == "multilabel":
        y = split_targets(split, classes, "split file")
        for j, col in enumerate(target_columns(classes)):
            out[col] = y[:, j]
    for col in sensitive:
        out[col] = split[col].to_numpy()
    return out
