"""RAD-DINO (Pérez-García et al. 2025, Microsoft): a DINOv2 ViT-B/14 trained on chest X-rays
with image-only self-supervision, a transformers ``Dinov2Model`` checkpoint
(``microsoft/rad-dino``: ``config.json`` + ``model.safetensors``).

Image-only: there is no text tower, so there is no zero-shot classification. The spec says so
(``text_tower=False``), the zero_shot method refuses the model with a clear message and the grid
check rejects the pair before any work. Linear probe, MLP head, LoRA and full fine-tuning use the
image embedding: the CLS token after the final layer norm (``pooler_output``, 768-d), the
embedding the model card recommends.

Preprocessing (the checkpoint's ``preprocessor_config.json``, a BitImageProcessor): shorter side
to 518 (bicubic), centre crop 518, scale to [0, 1], normalise with mean 0.5307 / std 0.2583 per
channel (the training set's statistics, grey images repeated to 3 channels).

LoRA (``train.lora_config: model``): this package's extension, not the paper's: its ViT rule
(rank 16, scale 1) on every layer's ``q_proj``, ``k_proj`` and ``v_proj`` (transformers 5 names;
12 x 6 x 16 x 768 = 884,736 adapter parameters), ``o_proj`` untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairxray.errors import UserError
from fairxray.models import _tiny
from fairxray.models._hf import Projected, strict_from_pretrained
from fairxray.models.base import ClipModel
from fairxray.models.pubmedclip import HF_FILES, qkv_lora
from fairxray.models.registry import ImageSpec, ModelSpec, TinySpec, register

IMAGE = ImageSpec(
    518, "shortest+center_crop", None, "bicubic", 3, (0.5307,) * 3, (0.2583,) * 3, "0-1"
)


class ImageOnlyModel(ClipModel):
    """An image encoder without a text tower: every text method is an error naming the model."""

    def __init__(self, spec: ModelSpec, tower: nn.Module) -> None:
        super().__init__(spec)
        self.vision = Projected(("backbone", None), tower, None)

    def _no_text(self):
        return UserError(
            f"model '{self.spec.name}' is image-only (no text tower): zero-shot classification and "
            "text embeddings are not available; use linear_probe, mlp, lora or full_ft"
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise self._no_text()

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        raise self._no_text()

    def text_modules(self) -> list[nn.Module]:
        return []

    def logit_scale(self) -> float:
        raise self._no_text()

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.vision.backbone.state_dict())


def default_config():
    from transformers import Dinov2Config

    # Dinov2Config() defaults are ViT-B/14 (768 x 12, 12 heads, MLP ratio 4, layer scale).
    return Dinov2Config(image_size=518, patch_size=14)


def tiny_config():
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_tiny.VIT_SIZE,
        patch_size=8,
    )


def build_raddino(spec: ModelSpec, config, folder: Path | None) -> ImageOnlyModel:
    from transformers import Dinov2Model

    hf = Dinov2Model(config) if folder is None else strict_from_pretrained(Dinov2Model, folder)
    return ImageOnlyModel(spec, hf).eval()


def _build(folder: Path | None) -> ImageOnlyModel:
    return build_raddino(SPEC, default_config(), folder)


SPEC = register(
    ModelSpec(
        name="rad-dino",
        family="hf_dinov2",
        build=_build,
        weight_files=HF_FILES,
        sha256=dict.fromkeys(HF_FILES, ""),
        source="https://huggingface.co/microsoft/rad-dino",
        license="MSRLA (Microsoft Research License Agreement, research use)",
        image=IMAGE,
        embed_dim=768,
        prompt_style="none",
        # transformers 5 names (4.x: attention.attention.query|key|value); the checkpoint's own
        # 4.x names are mapped by from_pretrained.
        lora_targets=r"backbone\.encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)",
        lora=qkv_lora(r"backbone\.encoder\.layer\.\d+\.attention", "Dinov2Model"),
        notes="transformers Dinov2Model ViT-B/14, 518 px, CLS (pooler_output); image-only",
        feature_dim=768,
        text_context=0,
        text_tower=False,
        tiny=TinySpec(
            lambda spec: build_raddino(spec, tiny_config(), None),
            _tiny.VIT_SIZE,
            32,
            32,
            "Dinov2Model 2 x 32, patch 8",
        ),
    )
)
