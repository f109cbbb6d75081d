"""The six added families against their upstream classes (fidelity rule): each fixture is built
with the upstream class at random init and a small config, saved with the class's own save
method in its distributed format, loaded through fairxray's real loader (``create(name,
weights_dir)``), and its embeddings compared with the upstream class's on the same input.

Upstream classes: open_clip ``CLIP`` (CheXzero, OpenAI RN50), transformers ``CLIPModel``
(PubMedCLIP), ``SiglipModel`` (MedSigLIP), ``Dinov2Model`` (RAD-DINO), and hi-ml-multimodal's
``ImageModel`` / ``CXRBertModel`` (BioViL; the PyPI wheel's model modules, imported without the
package's image-I/O ``__init__``, which needs SimpleITK/pydicom)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fairxray import adapt, cli
from fairxray.adapt import zero_shot
from fairxray.errors import UserError
from fairxray.models import create, get_spec, list_models, registry
from fairxray.models._hf import clip_bpe_dir, pooled

NEW = ("chexzero", "pubmedclip", "biovil", "medsiglip", "rad-dino", "clip-rn50", "clip-rn50x4")
TEXTS = ["pleural effusion", "no acute cardiopulmonary findings", "A chest X-ray showing edema!"]


def _perturb(module, seed=3):
    """Move every float parameter off its init, so a silent no-op load cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return module


def _images(size, n=2, seed=0):
    return torch.from_numpy(
        np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)
    )


def _exact(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _small_bert_kw(vocab=256):
    return dict(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip


def test_registry_lists_at_least_twelve_models_with_complete_new_specs():
    names = list_models()
    assert len(names) >= 12 and set(NEW) <= set(names)
    for n in NEW:
        s = get_spec(n)
        assert s.source.startswith("https://") and s.license and s.weight_files and s.lora_targets
        assert s.text_tower == (n != "rad-dino")
        if s.text_tower:
            assert (
                s.prompt_style in zero_shot.PROMPT_SCHEMES
                and zero_shot.PROMPT_SCHEMES[s.prompt_style]
            )


def test_models_json_lists_every_model(capsys):
    import json

    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in (rows if isinstance(rows, list) else rows["models"])]
    assert len(names) >= 12 and set(NEW) <= set(names)
    by_name = {r["name"]: r for r in (rows if isinstance(rows, list) else rows["models"])}
    assert by_name["rad-dino"]["zero_shot"] is False and by_name["chexzero"]["zero_shot"] is True


# -- CheXzero and OpenAI RN50: open_clip CLIP, OpenAI formats ------------------------------------

CLIP_SMALL = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
RN_SMALL = dict(
    CLIP_SMALL,
    embed_dim=32,
    vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
)


def _openclip_round_trip(tmp_path, name, cfg, save):
    import open_clip

    from fairxray.models.openclip import build_openai_clip, read_openai_state

    spec = get_spec(name)
    upstream = _perturb(open_clip.CLIP(**cfg)).eval()
    path = tmp_path / spec.weight_files[0]
    save(upstream, path)
    ours = build_openai_clip(spec, cfg, tmp_path)
    assert len(read_openai_state(path)) >= len(upstream.state_dict()) - 1
    x = _images(cfg["vision_cfg"]["image_size"])
    tok = open_clip.get_tokenizer("ViT-B-32-quickgelu")(TEXTS)
    with torch.no_grad():
        _exact(ours.encode_image(x, normalize=False), upstream.encode_image(x))
        _exact(ours.encode_text(TEXTS, normalize=False), upstream.encode_text(tok))
    return ours


def test_chexzero_plain_state_dict_round_trip(tmp_path):
    # CheXzero's train.py saves `torch.save(model.state_dict(), path)` of OpenAI's CLIP.
    _openclip_round_trip(
        tmp_path, "chexzero", CLIP_SMALL, lambda m, p: torch.save(m.state_dict(), p)
    )


def test_clip_rn50_torchscript_round_trip(tmp_path):
    # OpenAI ships RN50.pt as a TorchScript archive; the loader reads it without executing it.
    _openclip_round_trip(
        tmp_path, "clip-rn50", RN_SMALL, lambda m, p: torch.jit.script(m).save(str(p))
    )


@pytest.mark.parametrize("name", ["chexzero", "clip-rn50", "clip-rn50x4"])
def test_openai_specs_agree_with_open_clip_configs(name):
    import open_clip

    from fairxray.models.openclip import ARCHS

    cfg = open_clip.get_model_config(ARCHS[name])
    spec = get_spec(name)
    assert ARCHS[name].endswith("-quickgelu") and cfg["quick_gelu"]
    assert spec.embed_dim == cfg["embed_dim"] and spec.image.size == cfg["vision_cfg"]["image_size"]


def test_chexzero_preprocessing_is_pad_and_0_255_normalisation():
    from fairxray.models.preprocess import preprocess_pixels

    spec = get_spec("chexzero").image
    img = np.full((300, 224), 200, dtype=np.uint8)  # tall: padded left and right with black
    x = preprocess_pixels(torch.from_numpy(img)[None], spec)[0]
    assert x.shape == (3, 224, 224)
    # centre column: (200 - 101.48761) / 83.43944; padded border: (0 - 101.48761) / 83.43944
    torch.testing.assert_close(x[:, 112, 112], torch.full((3,), (200 - 101.48761) / 83.43944))
    torch.testing.assert_close(x[:, 112, 0], torch.full((3,), -101.48761 / 83.43944))


@pytest.mark.slow
@pytest.mark.heavy
def test_rn50_full_size_builds_with_openai_shapes():
    import open_clip

    m = create("clip-rn50")
    ref = open_clip.create_model("RN50-quickgelu")
    assert set(m.upstream_state_dict()) == set(ref.state_dict())
    with torch.no_grad():
        z = m.encode_image(m.preprocess(torch.zeros(1, 64, 64, dtype=torch.uint8)))
    assert z.shape == (1, 1024)


# -- PubMedCLIP: transformers CLIPModel ---------------------------------------------------------


def _clip_config():
    from transformers import CLIPConfig

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    return CLIPConfig(
        text_config=small,
        vision_config=dict(small, image_size=32, patch_size=16),
        projection_dim=16,
    )


def test_hf_clip_tokenizer_equals_open_clip_bpe():
    import open_clip
    from transformers import CLIPTokenizer

    d = clip_bpe_dir()
    hf = CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
    oc = open_clip.get_tokenizer("ViT-B-32-quickgelu")(TEXTS)
    for i, t in enumerate(TEXTS):
        ids = hf(t)["input_ids"]
        assert ids == oc[i][: len(ids)].tolist() and oc[i][len(ids) :].eq(0).all()


def test_pubmedclip_round_trip_against_clipmodel(tmp_path):
    import shutil

    from transformers import CLIPModel, CLIPTokenizer

    folder = tmp_path / "pubmedclip"
    upstream = _perturb(CLIPModel(_clip_config())).eval()
    upstream.save_pretrained(str(folder))
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(clip_bpe_dir() / f, folder / f)
    ours = create("pubmedclip", tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(folder))(
        TEXTS, padding="max_length", max_length=77, return_tensors="pt"
    )
    x = _images(32)
    with torch.no_grad():
        _exact(
            ours.encode_image(x, normalize=False),
            pooled(upstream.get_image_features(pixel_values=x)),
        )
        _exact(ours.encode_text(TEXTS, normalize=False), pooled(upstream.get_text_features(**tok)))
    assert ours.logit_scale() == pytest.approx(float(upstream.logit_scale.exp()))


def test_hf_loader_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel

    folder = tmp_path / "pubmedclip"
    CLIPModel(_clip_config()).save_pretrained(str(folder))
    for f in ("vocab.json", "merges.txt"):
        (folder / f).write_text((clip_bpe_dir() / f).read_text())
    sd = load_file(str(folder / "model.safetensors"))
    sd.pop(next(k for k in sd if "visual_projection" in k))
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="does not match CLIPModel: 1 missing keys"):
        create("pubmedclip", tmp_path)


# -- MedSigLIP: transformers SiglipModel --------------------------------------------------------


def _siglip_folder(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = SiglipConfig(
        text_config=dict(small, vocab_size=64, max_position_embeddings=64),
        vision_config=dict(small, image_size=32, patch_size=16),
    )
    upstream = _perturb(SiglipModel(cfg)).eval()
    upstream.save_pretrained(str(folder))
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(folder))
    return upstream, fast


def test_medsiglip_round_trip_against_siglipmodel(tmp_path):
    upstream, fast = _siglip_folder(tmp_path / "medsiglip")
    ours = create("medsiglip", tmp_path)
    tok = fast(TEXTS, padding="max_length", max_length=64, return_tensors="pt")
    assert torch.equal(ours.tokenize(TEXTS)["input_ids"], tok["input_ids"])
    x = _images(32)
    with torch.no_grad():
        _exact(
            ours.encode_image(x, normalize=False),
            pooled(upstream.get_image_features(pixel_values=x)),
        )
        _exact(
            ours.encode_text(TEXTS, normalize=False),
            pooled(upstream.get_text_features(input_ids=tok["input_ids"])),
        )
    keys = set(upstream.state_dict())
    assert set(ours.upstream_state_dict()) == keys  # logit_bias kept, nothing registered twice
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in upstream.parameters()
    )


# -- RAD-DINO: transformers Dinov2Model, image-only ---------------------------------------------


def _dinov2_folder(folder: Path):
    from transformers import Dinov2Config, Dinov2Model

    upstream = _perturb(
        Dinov2Model(
            Dinov2Config(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            )
        )
    ).eval()
    upstream.save_pretrained(str(folder))
    return upstream


def test_raddino_round_trip_against_dinov2model(tmp_path):
    upstream = _dinov2_folder(tmp_path / "rad-dino")
    ours = create("rad-dino", tmp_path)
    x = _images(28)
    with torch.no_grad():
        _exact(ours.encode_image(x, normalize=False), upstream(pixel_values=x).pooler_output)


def test_raddino_is_image_only_everywhere(tmp_path):
    from fairxray.config import load_params

    spec = get_spec("rad-dino")
    assert not spec.text_tower
    with pytest.raises(UserError, match="image-only"):
        zero_shot.class_prompts(spec, ["Edema"])
    with pytest.raises(UserError, match=r"\['rad-dino'\] are image-only.*\['zero_shot'\]"):
        adapt.check_grid(["toy", "rad-dino"], ["linear_probe", "zero_shot"])
    adapt.check_grid(["rad-dino"], ["linear_probe", "mlp", "lora", "full_ft"])
    adapt.check_grid(["toy", "chexzero"], ["zero_shot"])
    root = Path(__file__).resolve().parents[2]
    assert load_params(root / "params.yaml")  # the CLI below reads it
    rc = cli.main(
        [
            "train",
            "--model",
            "rad-dino",
            "--method",
            "zero_shot",
            "--params",
            str(root / "params.yaml"),
        ]
    )
    assert rc == 2


def test_image_only_model_refuses_text(tmp_path):
    _dinov2_folder(tmp_path / "rad-dino")
    m = create("rad-dino", tmp_path)
    with pytest.raises(UserError, match="rad-dino' is image-only"):
        m.encode_text(["edema"])
    assert m.text_modules() == []
    m.freeze_text()  # nothing to freeze: a no-op, not an error


# -- BioViL: hi-ml-multimodal ImageModel + CXRBertModel -----------------------------------------


def _himl():
    """hi-ml-multimodal's model classes from the installed wheel. Its ``image``/``text``
    ``__init__`` also import image I/O (SimpleITK, pydicom), not needed for the models, so those
    two package modules are stood in for by bare packages over the same folders."""
    spec = importlib.util.find_spec("health_multimodal")
    if spec is None:
        pytest.skip("hi-ml-multimodal (dev extra, pinned in requirements.lock) is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for sub in ("image", "text"):
        name = f"health_multimodal.{sub}"
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(root / sub)]
            sys.modules[name] = mod
    from health_multimodal.image.model.model import ImageModel
    from health_multimodal.text.model.configuration_cxrbert import CXRBertConfig
    from health_multimodal.text.model.modelling_cxrbert import CXRBertModel

    return ImageModel, CXRBertModel, CXRBertConfig


def test_biovil_round_trip_against_hi_ml_multimodal(tmp_path):
    from fairxray.models._bert import generated_vocab
    from fairxray.models.biovil import IMAGE_WEIGHTS

    ImageModel, CXRBertModel, CXRBertConfig = _himl()
    folder = tmp_path / "biovil"
    folder.mkdir()
    image = _perturb(ImageModel("resnet50", joint_feature_size=128)).eval()
    torch.save(image.state_dict(), folder / IMAGE_WEIGHTS)  # hi-ml's published .pt format
    text = _perturb(CXRBertModel(CXRBertConfig(projection_size=128, **_small_bert_kw()))).eval()
    text.save_pretrained(str(folder))
    vocab = generated_vocab()
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    ours = create("biovil", tmp_path)
    x = _images(64)
    tokens = ours.tokenize(TEXTS)
    with torch.no_grad():
        up = image(x)
        _exact(ours.encode_image(x, normalize=False), up.projected_global_embedding)
        _exact(ours.image_features(x), up.img_embedding)
        want = text.get_projected_text_embeddings(
            tokens["input_ids"], tokens["attention_mask"], normalize_embeddings=False
        )
        _exact(ours.encode_text(TEXTS, normalize=False), want)
    assert ours.logit_scale() == 1.0


def test_biovil_image_checkpoint_must_match(tmp_path):
    ImageModel, CXRBertModel, CXRBertConfig = _himl()
    from fairxray.models.biovil import IMAGE_WEIGHTS

    folder = tmp_path / "biovil"
    folder.mkdir()
    sd = ImageModel("resnet18", joint_feature_size=128).state_dict()  # the wrong trunk
    torch.save(sd, folder / IMAGE_WEIGHTS)
    CXRBertModel(CXRBertConfig(projection_size=128, **_small_bert_kw())).save_pretrained(
        str(folder)
    )
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(
        UserError, match="biovil_image_resnet50_proj_size_128.pt: checkpoint does not match"
    ):
        create("biovil", tmp_path)


# -- methods on small random builds of every new family ----------------------------------------


def _small_models(tmp_path) -> dict:
    """Small random builds through the real loaders (folders written by the upstream classes)."""
    import open_clip

    from fairxray.models.openclip import build_openai_clip

    out = {}
    for name, cfg in (("chexzero", CLIP_SMALL), ("clip-rn50", RN_SMALL)):
        # perturbed: open_clip's ModifiedResNet init zeroes every bn3 scale (no branch gradient)
        model = _perturb(build_openai_clip(get_spec(name), cfg, None))
        out[name] = (model, cfg["vision_cfg"]["image_size"])
    from transformers import CLIPModel

    d = tmp_path / "w"
    CLIPModel(_clip_config()).save_pretrained(str(d / "pubmedclip"))
    for f in ("vocab.json", "merges.txt"):
        (d / "pubmedclip" / f).write_text((clip_bpe_dir() / f).read_text())
    _siglip_folder(d / "medsiglip")
    _dinov2_folder(d / "rad-dino")
    for name, size in (("pubmedclip", 32), ("medsiglip", 32), ("rad-dino", 28)):
        out[name] = (create(name, d), size)
    assert open_clip
    return out


def test_lora_targets_match_and_get_gradients_on_new_families(tmp_path):
    from peft import LoraConfig, get_peft_model

    models = _small_models(tmp_path)
    from transformers import BertConfig

    from fairxray.models.biovil import build_biovil

    biovil_cfg = BertConfig(**_small_bert_kw())
    biovil_cfg.projection_size = 128
    models["biovil"] = (build_biovil(get_spec("biovil"), biovil_cfg, None), 64)
    for name, (m, size) in models.items():
        m.freeze_text()
        m.vision = get_peft_model(
            m.vision, LoraConfig(r=2, lora_alpha=4, target_modules=m.spec.lora_targets)
        )
        lora_b = {n: p for n, p in m.vision.named_parameters() if "lora_B" in n}
        assert lora_b, f"{name}: lora_targets matched nothing"
        m.train()
        m.encode_image(_images(size))[:, 0].sum().backward()
        zero = [n for n, p in lora_b.items() if p.grad is None or p.grad.abs().sum() == 0]
        assert not zero, f"{name}: no gradient reached {zero[:2]}"


@pytest.mark.parametrize("name", ["clip-rn50", "clip-rn50x4"])
def test_random_clip_resnet_lora_gets_gradient_on_every_conv(name):
    """The full-size defect, at a small config of the same builder: open_clip zero-initialises
    each bottleneck's bn3 scale, so with the trunk frozen no gradient reached the branch convs.
    The random build resets those scales; every adapter's B gets a non-zero gradient on step 1
    and A a non-zero one once B has moved (no perturbation here, unlike _small_models)."""
    from fairxray.adapt.lora import add_lora
    from fairxray.models.openclip import build_openai_clip

    m = build_openai_clip(get_spec(name), RN_SMALL, None)
    bn3 = [p for n, p in m.vision.named_parameters() if n.startswith("layer") and "bn3" in n]
    assert bn3 and all(bool((p != 0).all()) for p in bn3[::2])  # the weights (not the biases)
    m.freeze_text()
    vision = add_lora(m.vision, m.spec.lora_targets, rank=2, alpha=2.0, dropout=0.0)
    n_convs = sum(1 for n, _ in vision.named_modules() if n.endswith(("conv1", "conv2", "conv3")))
    params = dict(vision.named_parameters())
    b = {n: p for n, p in params.items() if ".lora_B." in n}
    assert len(b) == n_convs - 3  # every bottleneck conv; the three stem convs are not targets
    vision.train()
    opt = torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=0.5)
    for step in range(2):
        opt.zero_grad()
        vision(_images(64)).pow(2).sum().backward()
        grads = {n: p.grad for n, p in params.items() if p.requires_grad}
        kinds = (".lora_B.",) if step == 0 else (".lora_A.", ".lora_B.")
        dead = [n for n, g in grads.items() if any(k in n for k in kinds) and not g.abs().sum()]
        assert not dead, f"{name} step {step}: zero gradient at {dead[:3]}"
        opt.step()


def test_zero_shot_runs_on_every_new_text_family(tmp_path):
    for name, (m, size) in _small_models(tmp_path).items():
        if not m.spec.text_tower:
            continue
        probs = zero_shot.zero_shot_probs(m, _images(size), ["Edema", "Effusion", "Atelectasis"])
        assert probs.shape == (2, 3), name
        torch.testing.assert_close(probs.sum(1), torch.ones(2), msg=name)
        assert torch.isfinite(probs).all(), name


@pytest.mark.slow
@pytest.mark.heavy
# MedSigLIP's full random build (so400m towers at 448 px) is too large for the default CPU suite.
@pytest.mark.parametrize("name", ["pubmedclip", "rad-dino", "biovil"])
def test_full_size_random_builds_have_the_documented_dims(name):
    """The random (demo) builds: full architectures, offline; one image from a small cache."""
    m = create(name)
    with torch.no_grad():
        z = m.encode_image(m.preprocess(torch.zeros(1, 64, 64, dtype=torch.uint8)))
    assert z.shape == (1, m.spec.embed_dim)
    assert registry.get_spec(name) is m.spec
    assert (
        dataclasses.asdict(m.spec.image)["size"]
        == m.preprocess(torch.zeros(1, 8, 8, dtype=torch.uint8)).shape[-1]
    )


# -- LoRA at `lora_config: model` on the new families (this package's extension of the paper's
# rules: ViT rank 16 on the attention in-projection(s), ResNet rank 4 on layer1-4 convs, scale 1)


def _bottleneck_lora(stem: int, width: int, blocks, rank: int, inner: float = 1.0) -> int:
    """Closed form: peft conv LoRA, A = Conv2d(in, r, k) and B = Conv2d(r, out, 1), on conv1-3
    of every bottleneck (inner width ``inner * planes``, output 4 x planes, planes doubling from
    ``width``); the stem and downsample convs are not targets."""
    total, inp = 0, stem
    for i, n in enumerate(blocks):
        planes = width * 2**i
        w = int(planes * inner)
        for _ in range(n):
            total += rank * (inp + w) + rank * (9 * w + w) + rank * (w + 4 * planes)
            inp = 4 * planes
    return total


def _fused_in_proj_lora(layers: int, width: int, rank: int) -> int:
    return layers * rank * (width + 3 * width)  # A [r, w] + B [3w, r]


def _qkv_lora(layers: int, width: int, rank: int) -> int:
    return layers * 3 * rank * (width + width)  # q, k, v: A [r, w] + B [w, r] each


# name -> (rank, closed form at the tiny build, closed form at full size)
NEW_LORA = {
    "chexzero": (16, _fused_in_proj_lora(2, 64, 16), _fused_in_proj_lora(12, 768, 16)),
    "pubmedclip": (16, _qkv_lora(2, 32, 16), _qkv_lora(12, 768, 16)),
    "medsiglip": (16, _qkv_lora(2, 32, 16), _qkv_lora(27, 1152, 16)),
    "rad-dino": (16, _qkv_lora(2, 32, 16), _qkv_lora(12, 768, 16)),
    "biovil": (4, _bottleneck_lora(64, 64, [1] * 4, 4, 0.25), _bottleneck_lora(64, 64, [3, 4, 6, 3], 4)),
    "clip-rn50": (4, _bottleneck_lora(8, 8, [1] * 4, 4), _bottleneck_lora(64, 64, [3, 4, 6, 3], 4)),
    "clip-rn50x4": (4, _bottleneck_lora(8, 8, [1] * 4, 4), _bottleneck_lora(80, 80, [4, 6, 10, 6], 4)),
}  # fmt: skip


def test_new_family_lora_closed_forms_match_the_documented_full_sizes():
    full = {n: v[2] for n, v in NEW_LORA.items()}
    assert full["chexzero"] == 589_824  # = CLIP ViT-B's released setting
    assert full["pubmedclip"] == full["rad-dino"] == 884_736
    assert full["medsiglip"] == 2_985_984
    assert full["biovil"] == full["clip-rn50"] == 294_144  # = the released ResNet-50 count
    assert full["clip-rn50x4"] == 655_680


@pytest.mark.parametrize("name", sorted(NEW_LORA))
def test_new_family_paper_style_lora_counts_scale_and_training(name):
    """`lora_config: model` on every new family (tiny build, same module names as full size):
    the adapter size is the closed form for its targets and rank, each adapter's scale is 1.0
    (peft alpha = rank), out-projections are untouched, and two steps move every A and B."""
    from _trainkit import train_params
    from peft.tuners.tuners_utils import BaseTunerLayer

    from fairxray import adapt
    from fairxray.adapt.lora import ADAPTER, lora_parameters, snapshot_lora, unchanged_lora

    rank, expected, _ = NEW_LORA[name]
    m = create(name, None, "tiny")
    assert m.spec.lora is not None and m.spec.lora.rank == rank
    assert "not the paper's" in m.spec.lora.source
    hp = train_params(lora_config="model", lora_dropout=0.0, weight_decay=0.0, lr=1e-2)
    module = adapt.build("lora", n_classes=3, hp=hp, model=m)
    params = lora_parameters(module)
    assert sum(p.numel() for p in params.values()) == expected
    assert not any(k in n for n in params for k in ("out_proj", "o_proj", "downsample", "attnpool"))
    layers = [x for x in module.modules() if isinstance(x, BaseTunerLayer)]
    assert layers and all(x.scaling[ADAPTER] == 1.0 for x in layers)
    size = m.spec.image.size
    x = _images(size, n=4)
    start = snapshot_lora(module)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.train()
    for _ in range(2):  # lora_B starts at 0, so lora_A first gets a gradient on step 2
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
    assert unchanged_lora(module, start) == []
