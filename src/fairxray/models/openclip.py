"""OpenAI CLIP ViT-B/16, ViT-B/32, RN50 and RN50x4 through open_clip (OpenAI key layout, QuickGELU).

Built offline from open_clip's shipped ``-quickgelu`` configs (the plain configs use nn.GELU and
silently mismatch OpenAI weights). Real weights: OpenAI's TorchScript archive (``ViT-B-32.pt``,
sha256 = the URL path segment), read tensor-by-tensor with :mod:`safe_pickle`; plain state dicts,
``{'state_dict': ...}`` wrappers, ``module.`` prefixes and safetensors are accepted too.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import torch
from torch import nn

from fairxray.models import _tiny
from fairxray.models.base import ClipModel
from fairxray.models.registry import ImageSpec, LoraSpec, ModelSpec, TinySpec, register
from fairxray.models.safe_pickle import jit_state_dict
from fairxray.models.weights import read_state_file, strict_load, weight_path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE = ImageSpec(224, "shortest+center_crop", None, "bicubic", 3, CLIP_MEAN, CLIP_STD, "0-1")

# The released code adds alpha * B @ A (alpha 1, rank 16) to each visual block's fused
# in_proj_weight and nothing to out_proj: a peft parameter adapter on `in_proj_weight`
# (12 x 16 x (768 + 2304) = 589,824 parameters on ViT-B).
CLIP_LORA = LoraSpec(
    targets=(),
    rank=16,
    scale=1.0,
    parameters=("in_proj_weight",),
    source="released code: rank 16, alpha 1 on the visual attention in_proj_weight",
)

# TorchScript-only entries: ints OpenAI's build_model deletes, and the causal mask (a plain
# attribute in OpenAI's code, a non-persistent buffer in open_clip).
_JIT_ONLY = ("input_resolution", "context_length", "vocab_size")


class OpenClipModel(ClipModel):
    """Wraps an open_clip ``CLIP``/``CustomTextCLIP``: ``vision`` = its ``visual`` tower (moved
    out, so no parameter is registered twice), ``text`` = the rest (text tower, logit_scale)."""

    def __init__(self, spec: ModelSpec, clip: nn.Module, tokenizer) -> None:
        super().__init__(spec)
        visual = clip.visual
        del clip.visual
        self.vision = visual
        self.text = clip
        self._tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self._tokenizer(texts)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.text.encode_text(tokens["input_ids"], normalize=False)

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def logit_scale(self) -> float:
        return float(self.text.logit_scale.detach().exp())

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in open_clip / OpenAI key layout (``visual.*`` + text keys)."""
        sd = {f"visual.{k}": v for k, v in self.vision.state_dict().items()}
        sd.update(self.text.state_dict())
        return sd


def _clip_tokenizer(context: int):
    import open_clip

    # The BPE vocabulary ships inside the open_clip wheel: offline.
    tok = open_clip.get_tokenizer("ViT-B-32-quickgelu", context_length=context)
    return lambda texts: {"input_ids": tok(texts)}


def read_openai_state(path: Path) -> dict[str, torch.Tensor]:
    """OpenAI JIT archive, plain/wrapped state dict, or safetensors -> flat state dict."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            is_jit = any("/code/" in n for n in z.namelist())
        if is_jit:
            return jit_state_dict(path)
    sd = read_state_file(path)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]  # PubMedCLIP-style training checkpoint
    return sd


def _drop_openai(key: str) -> bool:
    return key in _JIT_ONLY or key.endswith("attn_mask")


def build_openai_clip(spec: ModelSpec, model_cfg: dict, folder: Path | None) -> OpenClipModel:
    import open_clip

    clip = open_clip.CLIP(**model_cfg)
    if folder is None:
        live_residual_branches(clip.visual)
    else:
        path = weight_path(folder, spec.weight_files[0])
        strict_load(
            clip,
            read_openai_state(path),
            source=str(path),
            strip_prefixes=("module.",),
            drop=_drop_openai,
        )
    return OpenClipModel(spec, clip, _clip_tokenizer(spec.text_context)).eval()


def live_residual_branches(visual: nn.Module) -> int:
    """Give a randomly initialised ModifiedResNet's residual branches a non-zero output.

    open_clip's ``ModifiedResNet.init_parameters`` zeroes the scale of every bottleneck's last
    BatchNorm (``bn3.weight``), the "zero-init residual" trick for training from scratch: each
    block then starts as the identity and nothing flows back into its ``conv1``-``conv3``. With
    the trunk frozen (LoRA), those scales stay zero forever, so every LoRA adapter on the
    bottleneck convs gets an exactly zero gradient. Trained OpenAI weights have non-zero scales;
    the random build stands in for them, so the scales are reset to BatchNorm's default 1.
    Returns how many were reset (0 for a ViT tower)."""
    n = 0
    with torch.no_grad():
        for name, bn in visual.named_modules():
            if name.startswith("layer") and name.endswith("bn3") and isinstance(bn, nn.BatchNorm2d):
                bn.weight.fill_(1.0)
                n += 1
    return n


def _config(name: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise RuntimeError(f"open_clip ships no config {name!r}")
    return cfg


ARCHS: dict[str, str] = {}  # registry name -> open_clip config it is built from


def tiny_openai_clip(model_cfg: dict, feature_dim: int | None) -> TinySpec:
    """``model_scale: tiny`` for an open_clip ``CLIP``: the same class at ``model_cfg``."""
    vc = model_cfg["vision_cfg"]
    kind = "ModifiedResNet" if isinstance(vc["layers"], list) else "ViT"
    return TinySpec(
        build=lambda spec: build_openai_clip(spec, model_cfg, None),
        image_size=vc["image_size"],
        embed_dim=model_cfg["embed_dim"],
        feature_dim=feature_dim,
        config=f"open_clip CLIP: {kind} layers {vc['layers']}, width {vc['width']}; text 2 x 32",
    )


# LoRA on the modified ResNets: the bottleneck convolutions of layers 1-4 (the paper's code
# adapts ResNet convs, rank 4). Not the attention pool: it passes its q/k/v/c weights to
# F.multi_head_attention_forward directly, so LoRA wrappers there would get no gradient. The
# random build resets the zero-initialised bn3 scales (:func:`live_residual_branches`), else no
# gradient reaches these convs either.
RESNET_LORA = r"layer[1-4]\.\d+\.conv[123]"
# fairxray's extension (the paper ran no CLIP ResNet): the paper's ResNet rule, rank 4 with
# scale 1 on the layer1-4 bottleneck convs; 294,144 adapter parameters on RN50 (the same conv
# shapes as a torchvision ResNet-50), 655,680 on RN50x4 (width 80, 4-6-10-6 blocks).
RESNET_LORA_SPEC = LoraSpec(
    targets=RESNET_LORA,
    rank=4,
    scale=1.0,
    source="fairxray extension, not the paper's: its ResNet rule (rank 4, scale 1, layer1-4 convs)",
)


def _register(
    name: str,
    arch: str,
    jit_file: str,
    sha: str,
    url: str,
    image: ImageSpec = CLIP_IMAGE,
    embed_dim: int = 512,
    lora_targets: str = r"transformer\.resblocks\.\d+\.attn",
    lora: LoraSpec | None = CLIP_LORA,
    feature_dim: int | None = 768,
    tiny: TinySpec | None = None,
) -> ModelSpec:
    ARCHS[name] = arch

    def build(folder: Path | None) -> OpenClipModel:
        return build_openai_clip(spec, _config(arch), folder)

    spec = register(
        ModelSpec(
            name=name,
            family="openclip_openai",
            build=build,
            weight_files=(jit_file,),
            sha256={jit_file: sha},
            source=url,
            license="MIT (openai/CLIP code and weights)",
            image=image,
            embed_dim=embed_dim,
            prompt_style="clip_ensemble",
            # Fallback targets (`lora`, where given, is what every lora_config uses): on ViTs peft
            # on the nn.MultiheadAttention module adapts in_proj and out_proj (884,736 at rank 16).
            lora_targets=lora_targets,
            lora=lora,
            notes=f"open_clip {arch}; OpenAI TorchScript archive read without executing it",
            feature_dim=feature_dim,
            text_context=77,
            tiny=tiny or tiny_openai_clip(_tiny.openclip_resnet_cfg(), None),
        )
    )
    return spec


_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_SHA_B32 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
_SHA_B16 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
_register(
    "clip-vit-b32",
    "ViT-B-32-quickgelu",
    "ViT-B-32.pt",
    _SHA_B32,
    f"{_OPENAI}/{_SHA_B32}/ViT-B-32.pt",
    tiny=tiny_openai_clip(_tiny.openclip_vit_cfg(16), 64),
)
_register(
    "clip-vit-b16",
    "ViT-B-16-quickgelu",
    "ViT-B-16.pt",
    _SHA_B16,
    f"{_OPENAI}/{_SHA_B16}/ViT-B-16.pt",
    tiny=tiny_openai_clip(_tiny.openclip_vit_cfg(8), 64),
)
_SHA_RN50 = "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"
_SHA_RN50X4 = "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"
# The modified ResNets end in an attention pool that outputs the joint embedding directly. The
# paper ran no CLIP ResNet: their `lora_config: model` setting is this package's extension
# (RESNET_LORA_SPEC, the paper's ResNet rule).
_register(
    "clip-rn50",
    "RN50-quickgelu",
    "RN50.pt",
    _SHA_RN50,
    f"{_OPENAI}/{_SHA_RN50}/RN50.pt",
    embed_dim=1024,
    lora_targets=RESNET_LORA,
    lora=RESNET_LORA_SPEC,
    feature_dim=None,
)
_register(
    "clip-rn50x4",
    "RN50x4-quickgelu",
    "RN50x4.pt",
    _SHA_RN50X4,
    f"{_OPENAI}/{_SHA_RN50X4}/RN50x4.pt",
    image=dataclasses.replace(CLIP_IMAGE, size=288),  # RN50x4 is trained at 288 px
    embed_dim=640,
    lora_targets=RESNET_LORA,
    lora=RESNET_LORA_SPEC,
    feature_dim=None,
)
