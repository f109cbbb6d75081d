"""Zero-shot classification: class text embeddings from each model's prompt scheme, then
``softmax(logit_scale * cosine)`` over the classes.

No upstream model ships NIH ChestX-ray14 prompts (``models.md`` §11) and the paper's prompts are
unknown (``paper-protocol.md`` §3), so the prompt sets below are this project's documented choice:
NIH label -> natural-language name (as KAD does: Effusion -> "pleural effusion"), then a model's
templates (``ModelSpec.prompt_style``). A class embedding is the mean of its L2-normalised prompt
embeddings, re-normalised (CLIP's prompt ensembling). Rows sum to 1: the 6x200 protocols are
single-label, so the decision is multiclass.
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
    # Image-only models (ModelSpec.zero_shot False): no text tower, no prompts.
    "none": (),
    # CheXzero: its positive template is the bare finding name ("{}" vs "no {}" upstream).
    "chexzero": ("{}",),
    # MedCLIP and GLoRIA were trained on radiology report sentences: report-style findings.
    "report_ensemble": (
        "{}",
        "findings consistent with {}.",
        "there is {}.",
        "the chest radiograph shows {}.",
        "evidence of {}.",
    ),
}


def require_text_tower(spec: ModelSpec) -> None:
    """Image-only models (``spec.zero_shot`` False, e.g. RAD-DINO) have no zero-shot method."""
    if not spec.zero_shot:
        raise UserError(
            f"model '{spec.name}' is image-only (no text tower): the zero_shot method is not "
            "available for it; remove zero_shot from `methods` or the model from `models`"
        )


def natural_name(label: str) -> str:
    return NATURAL_NAMES.get(label, label.replace("_", " ").lower())


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


def text_embeddings(model: ClipModel, classes: Sequence[str]) -> torch.Tensor:
    """L2-normalised class embeddings ``[n_classes, embed_dim]`` (prompt ensembles averaged)."""
    prompts = class_prompts(model.spec, classes)
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


def predictions(
    model: ClipModel,
    cache: ImageCache,
    split: pd.DataFrame,
    classes: Sequence[str],
    sensitive: Sequence[str] = ("age_group", "sex"),
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Zero-shot predictions for one split, in the predictions contract (docs/architecture.md):
    ``image_id, patient_id, label_idx, prob_<Class>..., <sensitive columns>``."""
    emb = encode_cache(model, cache, split["image_id"].tolist(), batch_size, device)
    text = text_embeddings(model, classes)
    probs = probs_from_embeddings(emb, text, model.logit_scale()).cpu().numpy()
    out = split[["image_id", "patient_id", "label_idx"]].reset_index(drop=True).copy()
    for j, c in enumerate(classes):
        out[f"prob_{c}"] = probs[:, j].astype(np.float64)
    for col in sensitive:
        out[col] = split[col].to_numpy()
    return out
