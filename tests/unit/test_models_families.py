"""Real families: save a random model in its UPSTREAM on-disk layout (prefixes, wrapper dicts,
legacy keys, TorchScript, Lightning checkpoint), load it back through the real loader strictly,
and get identical outputs. Fast tests use small configs with the same key layout; the full-size
round trips through ``create(name, weights_dir)`` are marked slow."""

from __future__ import annotations

import dataclasses
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fairxray.errors import UserError
from fairxray.models import create, get_spec, list_models
from fairxray.models._bert import (
    generated_vocab,
    is_stale_buffer,
    swin_relative_position_index,
    swin_v4_to_v5,
    swin_v5_to_v4,
)
from fairxray.models.registry import ImageSpec

SMALL_IMAGE = ImageSpec(32, "stretch", None, "bilinear", 3, (0.5,) * 3, (0.5,) * 3, "0-1")
# The families whose upstream layouts this file writes; the transformers-format and BioViL
# families (and CheXzero, RN50) have their round trips in test_models_breadth.py.
_HERE = ("openclip_openai", "openclip_hf", "medclip", "gloria")
_BREADTH = ("chexzero", "clip-rn50", "clip-rn50x4")
REAL = [n for n in list_models() if get_spec(n).family in _HERE and n not in _BREADTH]


def _perturb(model):
    """Move every float parameter off its init, so a silent no-op load cannot pass."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _write_vocab(folder: Path) -> None:
    vocab = generated_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")


def _small_bert(tmp: Path | None = None):
    from transformers import BertConfig

    cfg = BertConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    if tmp is not None:
        cfg.save_pretrained(str(tmp))
    return cfg


def _small_swin():
    from transformers import SwinConfig

    return SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4
    )


def _outputs(model, n_px=40):
    px = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, n_px, n_px), dtype=np.uint8)
    )
    with torch.no_grad():
        return model.encode_image(model.preprocess(px)), model.encode_text(
            ["pleural effusion", "no edema"]
        )


def _assert_same(a, b):
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# -- key maps on real key names ---------------------------------------------------------------


def test_swin_key_map_round_trips_on_real_swin_tiny_names():
    from transformers import SwinConfig, SwinModel

    keys = list(SwinModel(SwinConfig()).state_dict())
    assert len(keys) == 219  # transformers 5.x; 4.x had 231 with relative_position_index
    v4 = [swin_v5_to_v4(k) for k in keys]
    assert "encoder.layers.0.blocks.0.attention.self.query.weight" in v4
    assert "encoder.layers.0.blocks.0.attention.output.dense.weight" in v4
    assert "encoder.layers.0.blocks.0.intermediate.dense.weight" in v4
    assert "encoder.layers.0.blocks.0.output.dense.weight" in v4
    assert "encoder.layers.0.blocks.0.attention.self.relative_position_bias_table" in v4
    assert [swin_v4_to_v5(k) for k in v4] == keys
    assert is_stale_buffer("encoder.layers.0.blocks.0.attention.self.relative_position_index")
    assert is_stale_buffer("text_model.model.embeddings.position_ids")
    assert not is_stale_buffer("text_model.model.embeddings.position_embeddings.weight")


def test_recomputed_swin_index_equals_the_model_buffer():
    from transformers import SwinConfig, SwinModel

    m = SwinModel(SwinConfig())
    buf = dict(m.named_buffers())
    k = "encoder.layers.0.blocks.0.attention.relative_position_bias.relative_position_index"
    assert torch.equal(swin_relative_position_index(7), buf[k].reshape(49, 49))


# -- open_clip / OpenAI -----------------------------------------------------------------------

CLIP_SMALL = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _small_clip_spec():
    return dataclasses.replace(get_spec("clip-vit-b32"), embed_dim=16, image=SMALL_IMAGE)


@pytest.mark.parametrize("layout", ["torchscript", "wrapped_state_dict"])
def test_openai_clip_round_trip(tmp_path, layout):
    import open_clip

    from fairxray.models.openclip import build_openai_clip

    spec = _small_clip_spec()
    ref = _perturb(build_openai_clip(spec, CLIP_SMALL, None))
    upstream = open_clip.CLIP(**CLIP_SMALL)
    upstream.load_state_dict(ref.upstream_state_dict())
    path = tmp_path / spec.weight_files[0]
    if layout == "torchscript":  # OpenAI ships TorchScript archives, mostly fp16
        torch.jit.script(upstream.eval()).save(str(path))
    else:  # PubMedCLIP-style {'state_dict': ...} from a DataParallel model
        sd = {f"module.{k}": v for k, v in upstream.state_dict().items()}
        torch.save({"state_dict": sd, "best_epoch": 3}, path)
    _assert_same(ref, build_openai_clip(spec, CLIP_SMALL, tmp_path))


def test_openai_clip_loader_rejects_a_wrong_architecture(tmp_path):
    from fairxray.models.openclip import build_openai_clip

    spec = _small_clip_spec()
    other = dict(CLIP_SMALL, text_cfg=dict(CLIP_SMALL["text_cfg"], layers=2))
    torch.save(build_openai_clip(spec, other, None).upstream_state_dict(), tmp_path / "ViT-B-32.pt")
    with pytest.raises(UserError, match="unexpected"):
        build_openai_clip(spec, CLIP_SMALL, tmp_path)


def test_clip_tokenizer_is_offline_bpe():
    m = create("toy")  # cheap guard that importing families did not need the network
    from fairxray.models.openclip import _clip_tokenizer

    ids = _clip_tokenizer(77)(["a chest x-ray showing pleural effusion"])["input_ids"]
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and (ids[0] == 49407).sum() == 1
    assert m is not None


# -- BiomedCLIP ---------------------------------------------------------------------------------


def _small_biomed(tmp_path):
    from fairxray.models.biomedclip import model_config

    cfg_dir = tmp_path / "bert_cfg"
    _small_bert(cfg_dir)
    cfg = model_config(str(cfg_dir))
    cfg["embed_dim"] = 16
    # open_clip's timm tower keeps timm's 224 input; vit_tiny has vit_base's key layout.
    cfg["vision_cfg"] = dict(cfg["vision_cfg"], timm_model_name="vit_tiny_patch16_224")
    spec = dataclasses.replace(get_spec("biomedclip"), embed_dim=16)
    return spec, cfg


def test_biomedclip_round_trip_with_stale_position_ids(tmp_path):
    from fairxray.models.biomedclip import WEIGHTS, build_biomedclip

    spec, cfg = _small_biomed(tmp_path)
    ref = _perturb(build_biomedclip(spec, cfg, None))
    sd = ref.upstream_state_dict()
    assert any(k.startswith("visual.trunk.blocks.0.attn.qkv") for k in sd)
    sd["text.transformer.embeddings.position_ids"] = torch.arange(128)[None]
    folder = tmp_path / "biomedclip"
    _write_vocab(folder)
    torch.save(sd, folder / WEIGHTS)
    _assert_same(ref, build_biomedclip(spec, cfg, folder))


# -- MedCLIP ------------------------------------------------------------------------------------


def _medclip_upstream(model, swin_window: int | None) -> OrderedDict:
    """The transformers-4.x era layout MedCLIP's pytorch_model.bin has."""
    sd = OrderedDict()
    for k, v in model.upstream_state_dict().items():
        if swin_window is not None and k.startswith("vision_model.model.encoder."):
            k = swin_v5_to_v4(k)
        sd[k] = v
    if swin_window is not None:
        blocks = {k.split(".attention.")[0] for k in sd if ".attention.self.query.weight" in k}
        for b in sorted(blocks):
            sd[f"{b}.attention.self.relative_position_index"] = (
                swin_relative_position_index(swin_window)
                .flatten()
                .reshape(swin_window**2, swin_window**2)
            )
    sd["text_model.model.embeddings.position_ids"] = torch.arange(128)[None]
    return sd


@pytest.mark.parametrize("variant", ["resnet", "vit"])
def test_medclip_round_trip_from_legacy_layout(tmp_path, variant):
    from fairxray.models.medclip import (
        WEIGHTS,
        MedCLIPVisionModel,
        MedCLIPVisionModelViT,
        build_medclip,
    )

    bert = _small_bert()
    swin = _small_swin()
    name = "medclip-vit" if variant == "vit" else "medclip-resnet"
    spec = get_spec(name)

    def vision():
        return MedCLIPVisionModelViT(swin) if variant == "vit" else MedCLIPVisionModel()

    if variant == "vit":
        spec = dataclasses.replace(spec, image=dataclasses.replace(spec.image, size=32))
    ref = _perturb(build_medclip(spec, vision(), bert, None))
    sd = _medclip_upstream(ref, swin.window_size if variant == "vit" else None)
    if variant == "vit":
        assert any(".attention.self.query." in k for k in sd)
    folder = tmp_path / name
    _write_vocab(folder)
    torch.save(sd, folder / WEIGHTS)
    _assert_same(ref, build_medclip(spec, vision(), bert, folder))


def test_medclip_logit_scale_is_clamped_like_upstream():
    from fairxray.models.medclip import MedCLIPVisionModel, build_medclip

    m = build_medclip(get_spec("medclip-resnet"), MedCLIPVisionModel(), _small_bert(), None)
    with torch.no_grad():
        m.log_logit_scale.fill_(6.0)
    assert m.logit_scale() == pytest.approx(100.0, rel=1e-3)


# -- GLoRIA -------------------------------------------------------------------------------------


class FakeDictConfig:
    """Stands in for the OmegaConf object Lightning pickles into hyper_parameters."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _lightning_ckpt(model, path: Path) -> None:
    sd = OrderedDict((f"gloria.{k}", v) for k, v in model.upstream_state_dict().items())
    sd["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(128)[None]
    torch.save(
        {
            "epoch": 7,
            "state_dict": sd,
            "hyper_parameters": FakeDictConfig(model={"text": {"bert_type": "x"}}),
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}],
        },
        path,
    )


def test_gloria_lightning_checkpoint_converts_and_round_trips(tmp_path):
    from fairxray.models.gloria import WEIGHTS, build_gloria
    from fairxray.stages.convert_gloria import main as convert_main

    bert = _small_bert()
    spec = get_spec("gloria")
    ref = _perturb(build_gloria(spec, bert, None))
    ckpt = tmp_path / "chexpert_resnet50.ckpt"
    _lightning_ckpt(ref, ckpt)
    with pytest.raises(pickle.UnpicklingError):  # what the registry refuses to do silently
        torch.load(ckpt, weights_only=True)
    folder = tmp_path / "gloria"
    assert convert_main([str(ckpt), "--out", str(folder / WEIGHTS)]) == 0
    _write_vocab(folder)
    _assert_same(ref, build_gloria(spec, bert, folder))


def test_gloria_text_embedding_matches_upstream_word_aggregation():
    """Upstream: per layer, merge word pieces by summing, mean over the padded length; sum the
    last 4 layers. Reimplemented literally here and compared by cosine."""
    import torch.nn.functional as F

    from fairxray.models.gloria import build_gloria

    m = build_gloria(get_spec("gloria"), _small_bert(), None)
    tok = m.tokenize(["Small left pleural effusion"])
    with torch.no_grad():
        ours = m.text_forward(**tok)[0]
        out = m.text.model(**tok, output_hidden_states=True)
    ids = tok["input_ids"][0].tolist()
    itos = {i: t for t, i in generated_vocab().items()}
    layers = torch.stack(out.hidden_states[-4:])[:, 0]  # [4, L, H]
    words, bank = [], []
    for pos, tid in enumerate(ids):
        w = itos[tid]
        if w == "[SEP]":
            words.append(sum(bank))
            words.append(layers[:, pos])
            break
        if w.startswith("##"):
            bank.append(layers[:, pos])
        else:
            if bank:
                words.append(sum(bank))
            bank = [layers[:, pos]]
    agg = torch.stack(words, 1)  # [4, n_words, H]
    upstream = (agg.sum(1) / len(ids)).sum(0)
    assert F.cosine_similarity(ours, upstream, dim=0) > 1 - 1e-6
    torch.testing.assert_close(ours, upstream, rtol=1e-5, atol=1e-5)


def test_convert_gloria_rejects_non_lightning(tmp_path):
    from fairxray.models.convert import convert

    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.ckpt")
    with pytest.raises(UserError, match="no 'state_dict'"):
        convert(tmp_path / "x.ckpt", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# -- LoRA targets on the small builds (same module names as full size) ------------------------


def _small_models(tmp_path):
    from fairxray.models.biomedclip import build_biomedclip
    from fairxray.models.gloria import build_gloria
    from fairxray.models.medclip import MedCLIPVisionModel, MedCLIPVisionModelViT, build_medclip
    from fairxray.models.openclip import build_openai_clip

    spec, cfg = _small_biomed(tmp_path)
    vit_spec = get_spec("medclip-vit")
    vit_spec = dataclasses.replace(vit_spec, image=dataclasses.replace(vit_spec.image, size=32))
    return {
        "clip-vit-b32": build_openai_clip(_small_clip_spec(), CLIP_SMALL, None),
        "biomedclip": build_biomedclip(spec, cfg, None),
        "medclip-resnet": build_medclip(
            get_spec("medclip-resnet"), MedCLIPVisionModel(), _small_bert(), None
        ),
        "medclip-vit": build_medclip(
            vit_spec, MedCLIPVisionModelViT(_small_swin()), _small_bert(), None
        ),
        "gloria": build_gloria(get_spec("gloria"), _small_bert(), None),
    }


def _resnet50_conv_lora(rank: int) -> int:
    """Closed form: peft conv LoRA = A Conv2d(in, r, k) + B Conv2d(r, out, 1) on conv1-3 of every
    torchvision ResNet-50 bottleneck (layers of 3, 4, 6, 3 blocks, widths 64-512, expansion 4)."""
    total, inp = 0, 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True):
        for _ in range(blocks):
            total += rank * (inp + width) + rank * (9 * width + width) + rank * (width + 4 * width)
            inp = 4 * width
    return total


def _in_proj_lora(layers: int, width: int, rank: int) -> int:
    return layers * rank * (width + 3 * width)  # A [r, w] + B [3w, r] on the fused in-projection


def _swin_qkv_lora(dims, depths, rank: int) -> int:
    return sum(3 * rank * 2 * d * n for d, n in zip(dims, depths, strict=True))


# Adapter parameters at each family's released-code rank (`lora_config: model`), closed form for
# the small test configs: CLIP 1 layer of width 64; BiomedCLIP's timm tower vit_tiny (12 x 192);
# the ResNet-50s at full size; Swin embed 16, depths (1, 2).
PAPER_LORA = {
    "clip-vit-b32": (16, _in_proj_lora(1, 64, 16)),
    "biomedclip": (16, _in_proj_lora(12, 192, 16)),
    "medclip-resnet": (4, _resnet50_conv_lora(4)),
    "medclip-vit": (16, _swin_qkv_lora((16, 32), (1, 2), 16)),
    "gloria": (4, _resnet50_conv_lora(4)),
}


def test_closed_forms_reproduce_the_full_size_counts():
    # The numbers measured on the full-size models (issue: 294,144 at rank 4, 1,176,576 at 16;
    # ViT-B rank 16 on the in-projection 589,824): the closed forms above are the right ones.
    assert _resnet50_conv_lora(4) == 294_144 and _resnet50_conv_lora(16) == 1_176_576
    assert _in_proj_lora(12, 768, 16) == 589_824


def _lora_hp(**kw):
    from _trainkit import train_params

    return train_params(lora_dropout=0.0, weight_decay=0.0, **kw)


def test_paper_lora_counts_scale_and_training(tmp_path):
    """Per family at `lora_config: model`: adapter size = the closed form for its targets and
    rank, every adapter's scale = the released 1.0, and two optimiser steps move every A and B."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from fairxray import adapt
    from fairxray.adapt.lora import ADAPTER, lora_parameters, snapshot_lora, unchanged_lora

    hp = _lora_hp(lora_config="model", lr=1e-2)
    for name, m in _small_models(tmp_path).items():
        rank, expected = PAPER_LORA[name]
        assert m.spec.lora.rank == rank, name
        module = adapt.build("lora", n_classes=3, hp=hp, model=m)
        assert sum(p.numel() for p in lora_parameters(module).values()) == expected, name
        layers = [x for x in module.modules() if isinstance(x, BaseTunerLayer)]
        assert layers and all(x.scaling[ADAPTER] == 1.0 for x in layers), name
        if name in ("gloria", "biomedclip"):
            # Trained through the same peft layers as medclip-resnet (conv) and medclip-vit
            # (Linear); skipped to keep the test fast (timm's tower needs 224 px).
            continue
        x = torch.randn(2, 3, 32, 32)  # straight into the towers (the small configs take 32 px)
        start = snapshot_lora(module)
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
        module.train()
        for _ in range(2):  # lora_B starts at 0, so lora_A first gets a gradient on step 2
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(x), torch.tensor([0, 1])).backward()
            opt.step()
        assert unchanged_lora(module, start) == [], name


def test_clip_lora_is_the_released_update_on_in_proj_only():
    """The released code: in_proj_weight + 1.0 * B @ A, out_proj untouched. Compared with a
    plain copy whose in_proj_weight is edited by hand; the export merge gives the same tower."""
    import copy

    from fairxray.adapt.lora import apply_lora, lora_parameters, lora_settings
    from fairxray.export.onnx import merge_lora
    from fairxray.models.openclip import build_openai_clip

    m = build_openai_clip(_small_clip_spec(), CLIP_SMALL, None)
    plain = copy.deepcopy(m.vision)
    settings = lora_settings(m.spec, _lora_hp(lora_config="model"))
    vision = apply_lora(m.vision, settings, dropout=0.0)
    params = lora_parameters(vision)
    assert all(".attn.lora_" in n for n in params) and not any("out_proj" in n for n in params)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for i, block in enumerate(plain.transformer.resblocks):
            pre = f"transformer.resblocks.{i}.attn."
            a, b = params[pre + "lora_A.default.weight"], params[pre + "lora_B.default.weight"]
            block.attn.in_proj_weight.add_(b @ a)
        x = torch.randn(2, 3, 32, 32, generator=g)
        adapted, ref = vision(x), plain(x)
        torch.testing.assert_close(adapted, ref, rtol=1e-5, atol=1e-5)
        assert merge_lora(vision) == 1
        torch.testing.assert_close(vision(x), ref, rtol=1e-5, atol=1e-5)


def test_lora_config_train_and_equal_budget():
    from fairxray.adapt.lora import adapter_size, lora_settings
    from fairxray.models.medclip import MedCLIPVisionModel

    spec, vision = get_spec("medclip-resnet"), MedCLIPVisionModel()
    s = lora_settings(spec, _lora_hp(lora_config="train", lora_rank=8, lora_alpha=2.0))
    assert (s.rank, s.scale, s.alpha) == (8, 0.25, 2.0)  # peft's alpha / rank
    s = lora_settings(spec, _lora_hp(lora_config="equal_budget", lora_budget=589_824), vision)
    per_rank = _resnet50_conv_lora(1)
    assert s.rank == 8 and s.scale == 1.0  # 589,824 / 73,536 = 8.02
    size = adapter_size(vision, s)
    assert size == 8 * per_rank and abs(size - 589_824) <= per_rank / 2
    with pytest.raises(UserError, match="declares none"):
        lora_settings(dataclasses.replace(spec, lora=None), _lora_hp(lora_config="model"))
    with pytest.raises(UserError, match="lora_config"):
        lora_settings(spec, _lora_hp(lora_config="paper"))


def test_parameter_adapter_refuses_dropout():
    from fairxray.adapt.lora import apply_lora, lora_settings
    from fairxray.models.openclip import build_openai_clip

    m = build_openai_clip(_small_clip_spec(), CLIP_SMALL, None)
    s = lora_settings(m.spec, _lora_hp(lora_config="model"))
    with pytest.raises(UserError, match="lora_dropout: must be 0"):
        apply_lora(m.vision, s, dropout=0.1)


def test_every_family_tokenizes_offline_and_normalises(tmp_path):
    for name, m in _small_models(tmp_path).items():
        img, txt = _outputs(m)
        torch.testing.assert_close(img.norm(dim=-1), torch.ones(2), msg=name)
        torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2), msg=name)
        assert not torch.allclose(txt[0], txt[1]), name


# -- full size, through the registry (slow) -----------------------------------------------------


def _save_full_upstream(name: str, model, folder: Path) -> None:
    from safetensors.torch import save_file

    spec = get_spec(name)
    folder.mkdir(parents=True)
    _write_vocab(folder)
    if spec.family == "openclip_openai":
        import open_clip

        from fairxray.models.openclip import ARCHS

        up = open_clip.create_model(ARCHS[name])
        up.load_state_dict(model.upstream_state_dict())
        torch.jit.script(up.eval()).save(str(folder / spec.weight_files[0]))
    elif spec.family == "openclip_hf":
        torch.save(model.upstream_state_dict(), folder / spec.weight_files[0])
    elif spec.family == "medclip":
        window = 7 if name == "medclip-vit" else None
        torch.save(_medclip_upstream(model, window), folder / spec.weight_files[0])
    elif spec.family == "gloria":
        ckpt = folder.parent / "chexpert_resnet50.ckpt"
        _lightning_ckpt(model, ckpt)
        from fairxray.models.convert import convert

        convert(ckpt, folder / spec.weight_files[0])
    else:
        save_file(model.state_dict(), str(folder / spec.weight_files[0]))


@pytest.mark.slow
@pytest.mark.heavy  # full-size random builds saved and reloaded: minutes on 2 cores
@pytest.mark.parametrize("name", REAL)
def test_full_size_round_trip_through_registry(tmp_path, name, monkeypatch):
    from fairxray.models import weights_status

    spec = get_spec(name)
    # Known upstream hashes cannot match a random file: check presence, not the hash, here.
    from fairxray.models import registry

    no_hash = dataclasses.replace(spec, sha256=dict.fromkeys(spec.sha256, ""))
    monkeypatch.setitem(registry._REGISTRY, name, no_hash)
    ref = _perturb(create(name))
    _save_full_upstream(name, ref, tmp_path / name)
    assert weights_status(name, tmp_path).valid
    loaded = create(name, tmp_path)
    _assert_same(ref, loaded)


# -- GLoRIA text cleaning (upstream process_text) ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Atelectasis", ""),  # one word: dropped, so the prompt encodes as [CLS] [SEP]
        ("pleural effusion", "pleural effusion"),
        ("1. Small left effusion 2. No pneumothorax.", "small left effusion no pneumothorax"),
        (
            "Edema. Mild cardiomegaly.\nNo focal consolidation",
            "mild cardiomegaly no focal consolidation",
        ),
        ("3.5 cm mass", "5 cm mass"),  # "3." is a list marker to upstream's splitter
        ("Résumé: opacité basale", "rsum opacit basale"),  # non-ASCII characters dropped
    ],
)
def test_gloria_text_matches_upstream_cleaning(text, expected):
    from fairxray.models.gloria import gloria_text

    assert gloria_text(text) == expected


def test_gloria_tokens_single_word_and_long_prompts():
    from fairxray.models.gloria import CONTEXT, build_gloria

    m = build_gloria(get_spec("gloria"), _small_bert(), None)
    itos = {i: t for t, i in generated_vocab().items()}
    tok = m.tokenize(["atelectasis", "word " * 200])
    assert tok["input_ids"].shape == (2, CONTEXT)
    assert [itos[i] for i in tok["input_ids"][0, :3].tolist()] == ["[CLS]", "[SEP]", "[PAD]"]
    assert int(tok["attention_mask"][1].sum()) == CONTEXT  # truncated at upstream's 97 tokens
    assert itos[int(tok["input_ids"][1, -1])] == "[SEP]"
