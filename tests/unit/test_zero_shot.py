"""Zero-shot: prompt sets, ensembles, probabilities and the predictions contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fairxray.adapt.zero_shot import (
    PROMPT_SCHEMES,
    class_prompts,
    natural_name,
    predictions,
    probs_from_embeddings,
    text_embeddings,
    zero_shot_probs,
)
from fairxray.config import PAPER_CLASSES
from fairxray.data.cache import ImageCache
from fairxray.models import create, get_spec, list_models


def make_cache(path, n=6, size=48) -> ImageCache:
    """A complete image cache in the documented layout (data/cache.py), rows shuffled."""
    rng = np.random.default_rng(1)
    path.mkdir(parents=True)
    np.save(path / "pixels.npy", rng.integers(0, 256, size=(n, size, size), dtype=np.uint8))
    ids = [f"{i:08d}_000.png" for i in range(n)]
    pd.DataFrame({"image_id": ids, "row": rng.permutation(n)}).to_parquet(path / "index.parquet")
    (path / "manifest.json").write_text(
        json.dumps({"size": size, "source": "synthetic", "complete": True})
    )
    return ImageCache.open(path)


def test_every_model_has_a_prompt_scheme_with_natural_names():
    assert natural_name("Effusion") == "pleural effusion"
    assert natural_name("Pleural_Thickening") == "pleural thickening"
    for n in list_models():
        spec = get_spec(n)
        assert spec.prompt_style in PROMPT_SCHEMES
        if not spec.zero_shot:  # image-only (RAD-DINO): no prompts; test_models_breadth.py
            continue
        prompts = class_prompts(spec, PAPER_CLASSES)
        assert list(prompts) == list(PAPER_CLASSES)
        assert all("pleural effusion" in p for p in prompts["Effusion"])
        assert all("Effusion" not in p for p in prompts["Effusion"])


def test_text_embeddings_average_normalised_prompt_embeddings():
    model = create("toy")
    emb = text_embeddings(model, ["Edema", "Effusion"])
    assert emb.shape == (2, model.spec.embed_dim)
    prompts = class_prompts(model.spec, ["Effusion"])["Effusion"]
    with torch.no_grad():
        each = torch.stack([model.encode_text([p])[0] for p in prompts])
    expected = each.mean(0) / each.mean(0).norm()
    torch.testing.assert_close(emb[1], expected)


def test_probs_hand_example():
    # cos = (1, 0) for an image equal to class 0's text; scale 2 -> softmax(2, 0).
    p = probs_from_embeddings(torch.tensor([[3.0, 0.0]]), torch.eye(2), 2.0)
    e = math.exp(2)
    torch.testing.assert_close(p, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))


def test_zero_shot_probs_are_softmax_of_scaled_cosine():
    model = create("toy")
    px = torch.randint(0, 256, (5, 40, 40), dtype=torch.uint8)
    images = model.preprocess(px)
    probs = zero_shot_probs(model, images, PAPER_CLASSES)
    assert probs.shape == (5, 6)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    with torch.no_grad():
        img = F.normalize(model.vision(images), dim=-1).numpy()
    txt = text_embeddings(model, PAPER_CLASSES).numpy()
    logits = model.logit_scale() * img @ txt.T
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(probs.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_predictions_follow_the_contract(tmp_path):
    cache = make_cache(tmp_path / "img", n=6)
    split = pd.DataFrame(
        {
            "image_id": ["00000002_000.png", "00000005_000.png", "00000002_000.png"],
            "patient_id": ["00000002", "00000005", "00000002"],
            "label": ["Edema", "Effusion", "Edema"],
            "label_idx": [3, 4, 3],
            "age": [30, 70, 30],
            "sex": ["F", "M", "F"],
            "age_group": ["0-59", "60-99", "0-59"],
            "view": ["PA", "AP", "PA"],
        }
    )
    model = create("toy")
    out = predictions(model, cache, split, PAPER_CLASSES, batch_size=2)
    prob_cols = [f"prob_{c}" for c in PAPER_CLASSES]
    assert list(out.columns) == [
        "image_id",
        "patient_id",
        "label_idx",
        *prob_cols,
        "age_group",
        "sex",
    ]
    assert out["image_id"].tolist() == split["image_id"].tolist()
    np.testing.assert_allclose(out[prob_cols].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.loc[0, prob_cols], out.loc[2, prob_cols])
    direct = zero_shot_probs(
        model, model.preprocess(torch.from_numpy(cache.get(split["image_id"]))), PAPER_CLASSES
    )
    np.testing.assert_allclose(out[prob_cols].to_numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
