"""Zero-shot: prompt sets, ensembles, probabilities and the predictions contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
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
        if not spec.text_tower:  # image-only (RAD-DINO): no prompts; test_models_breadth.py
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


# -- upstream rules: GLoRIA (local + global) and MedCLIP (padded prompt batches) ----------------


def _upstream_local(img_l, words, cap_lens):
    """GLoRIA's get_local_similarities + attention_fn, written out step by step in upstream's
    order of reshapes (an independent re-derivation of fairxray's vectorised version)."""
    b, h, ih, iw = img_l.shape
    cols = []
    for i, n in enumerate(cap_lens):
        word = words[i, :, 1 : n + 1].unsqueeze(0).repeat(b, 1, 1)  # [B, H, W]
        context = img_l.view(b, h, ih * iw)
        attn = torch.bmm(context.transpose(1, 2), word)  # [B, R, W]
        attn = torch.softmax(attn.reshape(b * ih * iw, -1), dim=-1).view(b, ih * iw, -1)
        attn = attn.transpose(1, 2).reshape(-1, ih * iw) * 4.0
        attn = torch.softmax(attn, dim=-1).view(b, -1, ih * iw)
        wei = torch.bmm(context, attn.transpose(1, 2))  # [B, H, W]
        w2 = word.transpose(1, 2).reshape(b * word.shape[2], -1)
        c2 = wei.transpose(1, 2).reshape(b * word.shape[2], -1)
        num = (w2 * c2).sum(1)
        cos = num / (w2.norm(dim=1) * c2.norm(dim=1)).clamp(min=1e-8)
        row = (cos.view(b, -1) * 5.0).exp().max(1, keepdim=True).values.log()
        cols.append(row)
    return torch.cat(cols, 1)


def test_gloria_similarities_match_upstream_steps():
    from fairxray.adapt.zero_shot import gloria_similarities

    g = torch.Generator().manual_seed(0)
    img_l, img_g = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 8, generator=g)
    words, sent = torch.randn(2, 8, 10, generator=g), torch.randn(2, 8, generator=g)
    words[1, :, 5:] = 0.0  # zero word slots past [SEP], spanned by upstream's character count
    cap_lens = [3, 9]
    ours = gloria_similarities(img_l, img_g, words, sent, cap_lens)
    glob = F.cosine_similarity(img_g[:, None], sent[None], dim=-1)
    torch.testing.assert_close(ours, (_upstream_local(img_l, words, cap_lens) + glob) / 2)


@pytest.fixture(scope="module")
def small_gloria():
    from transformers import BertConfig

    from fairxray.models.gloria import build_gloria

    # GLoRIA has no text projection: the text width must be the image embedding's 768.
    bert = BertConfig(
        vocab_size=256, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    return build_gloria(get_spec("gloria"), bert, None)


def test_gloria_word_embeddings_merge_pieces_and_count_characters(small_gloria):
    from fairxray.models._bert import generated_vocab

    m = small_gloria
    words, sent, cap_lens = m.word_embeddings(["mild edema.", "no pneumothorax"])
    assert cap_lens == [len("mild edema."), len("no pneumothorax")]  # upstream's char count
    tok = m.tokenize(["mild edema."])
    itos = {i: t for t, i in generated_vocab().items()}
    pieces = [itos[i] for i in tok["input_ids"][0].tolist()]
    with torch.no_grad():
        h = m.text.token_states(tok["input_ids"], tok["attention_mask"])[0]
    n_pieces = pieces.index("[SEP]")  # [CLS] m ##i ##l ##d e ##d ##e ##m ##a [SEP]
    mild = h[1:5].sum(0)
    edema = h[5:n_pieces].sum(0)
    torch.testing.assert_close(words[0, :, 1], mild)
    torch.testing.assert_close(words[0, :, 2], edema)
    torch.testing.assert_close(words[0, :, 3], h[n_pieces])  # [SEP] is a word slot
    assert torch.count_nonzero(words[0, :, 4:]) == 0
    torch.testing.assert_close(sent[0], m.text_forward(**tok)[0])


def test_gloria_rule_standardises_each_class_and_keeps_a_named_variant(tmp_path, small_gloria):
    from fairxray.adapt.zero_shot import class_logits, rule_for

    cache = make_cache(tmp_path / "img", n=4, size=32)
    ids = [f"{i:08d}_000.png" for i in range(4)]
    classes = PAPER_CLASSES[:3]
    m = small_gloria
    m.vision.input_size = 64  # same computation on a 4 x 4 region grid (299 gives 19 x 19): fast
    assert rule_for(m.spec) == "gloria_local_global"
    assert rule_for(m.spec, "cosine_softmax") == "cosine_softmax"
    z = class_logits(m, cache, ids, classes, "gloria_local_global", batch_size=3)
    assert z.shape == (4, 3)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    old = class_logits(m, cache, ids, classes, "cosine_softmax")
    with torch.no_grad():
        emb = F.normalize(m.vision(m.preprocess(torch.from_numpy(cache.get(ids)))), dim=-1)
    ref = 10.0 * emb @ text_embeddings(m, classes).T  # today's: global only, scale 10
    torch.testing.assert_close(old, ref.detach(), rtol=1e-4, atol=1e-4)


def test_medclip_padded_prompts_follow_upstream():
    """Upstream pads one class's prompts together and averages over the padding: the longest
    prompt is unchanged, a shorter one moves; the class logit is the mean over prompts."""
    from test_models_families import _small_bert

    from fairxray.adapt.zero_shot import _medclip_logits
    from fairxray.models.medclip import MedCLIPVisionModel, build_medclip

    m = build_medclip(get_spec("medclip-resnet"), MedCLIPVisionModel(), _small_bert(), None)
    prompts = ["edema", "findings consistent with pulmonary edema."]
    with torch.no_grad():
        padded = m.encode_text_padded(prompts)
        alone = torch.stack([m.encode_text([p])[0] for p in prompts])
    torch.testing.assert_close(padded[1], alone[1], rtol=1e-5, atol=1e-5)
    assert F.cosine_similarity(padded[0], alone[0], dim=0) < 0.999
    img = torch.randn(3, 512)
    got = _medclip_logits(m, img.numpy(), {"Edema": prompts}, ["Edema"])
    ref = (m.logit_scale() * F.normalize(img, dim=-1) @ padded.T).mean(1, keepdim=True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_every_prompt_set_names_its_source_and_rules_are_known():
    from fairxray.adapt.zero_shot import PROMPT_SOURCES, ZERO_SHOT_RULES, rule_for

    assert set(PROMPT_SOURCES) == set(PROMPT_SCHEMES)
    for n in list_models():
        spec = get_spec(n)
        assert rule_for(spec) in ZERO_SHOT_RULES
        if spec.family == "gloria":  # upstream cleaning drops one-word prompts: none in its set
            assert all(
                len(p.split()) > 1 for ps in class_prompts(spec, PAPER_CLASSES).values() for p in ps
            )
    with pytest.raises(ValueError, match="zero_shot_rule"):
        rule_for(get_spec("toy"), "gloria_local_global")
