"""PubMedCLIP (Eslami et al. 2023): OpenAI CLIP ViT-B/32 fine-tuned on ROCO, as a transformers
``CLIPModel`` checkpoint (the conversion published as ``flaviagiammarino/pubmed-clip-vit-base-
patch32``, MIT): ``config.json`` + ``model.safetensors`` + the CLIP BPE ``vocab.json`` /
``merges.txt``.

Also the shared wrapper of transformers dual encoders (:class:`HFDualModel`), used by MedSigLIP:
the loaded model is split into ``vision`` (vision tower + projection, what LoRA and full
fine-tuning adapt) and ``text`` (text tower, projection, logit scale), so no parameter is
registered twice.

Preprocessing: CLIP's 224 pipeline and RGB statistics, as the conversion's processor and
downstream users (FairMedFM) use; the authors' training used ImageNet statistics at 250 px
(documented choice, in the spec's ``notes``).

LoRA (``train.lora_config: model``): this package's extension, not the paper's (the paper has no
setting for these families). The paper's ViT rule, rank 16 with scale 1 on the attention
in-projection, maps to transformers' separate ``q_proj``, ``k_proj`` and ``v_proj`` of every
vision layer (``out_proj`` untouched, as in the released code). Three rank-16 adapters hold
``6 * 16 * width`` parameters per layer against the fused in-projection's ``4 * 16 * width``:
884,736 on PubMedCLIP's ViT-B/32 instead of CLIP's 589,824 (``equal_budget`` evens it out).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairxray.models import _tiny
from fairxray.models._hf import Projected, hf_clip_tokenizer, strict_from_pretrained
from fairxray.models.base import ClipModel
from fairxray.models.openclip import CLIP_IMAGE
from fairxray.models.registry import LoraSpec, ModelSpec, TinySpec, register

HF_FILES = ("config.json", "model.safetensors")


def qkv_lora(attention: str, family: str) -> LoraSpec:
    """The paper's ViT rule on a transformers tower with separate q/k/v projections;
    ``attention`` is the regex of each layer's attention module."""
    return LoraSpec(
        targets=rf"{attention}\.(q_proj|k_proj|v_proj)",
        rank=16,
        scale=1.0,
        source=f"fairxray extension, not the paper's: its ViT rule (rank 16, scale 1 on the "
        f"attention in-projections) on {family}'s q_proj, k_proj, v_proj",
    )


class HFDualModel(ClipModel):
    """A transformers ``CLIPModel`` / ``SiglipModel`` behind the :class:`ClipModel` interface."""

    def __init__(self, spec: ModelSpec, hf: nn.Module, tokenizer) -> None:
        super().__init__(spec)
        proj = getattr(hf, "visual_projection", None)
        self.vision = Projected(
            ("vision_model", "visual_projection" if proj is not None else None),
            hf.vision_model,
            proj,
        )
        self.text = nn.Module()
        self.text.text_model = hf.text_model
        if getattr(hf, "text_projection", None) is not None:
            self.text.text_projection = hf.text_projection
        self.text.logit_scale = hf.logit_scale
        if getattr(hf, "logit_bias", None) is not None:  # SigLIP; cancels in a softmax
            self.text.logit_bias = hf.logit_bias
        self._tokenizer = tokenizer
        self._hf_class = type(hf)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self._tokenizer(texts)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        z = self.text.text_model(**tokens).pooler_output
        proj = getattr(self.text, "text_projection", None)
        return z if proj is None else proj(z)

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def logit_scale(self) -> float:
        return float(self.text.logit_scale.detach().exp())

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the transformers class's own key layout."""
        sd = dict(self.vision.state_dict())
        sd.update(self.text.state_dict())
        return sd


def default_config():
    from transformers import CLIPConfig

    # CLIPConfig() defaults are OpenAI's ViT-B/32 (vision 768 x 12, patch 32, 224 px; text
    # 512 x 12, 77 tokens, vocab 49408; projection 512) with QuickGELU.
    return CLIPConfig()


def build_pubmedclip(spec: ModelSpec, config, folder: Path | None) -> HFDualModel:
    from transformers import CLIPModel

    hf = CLIPModel(config) if folder is None else strict_from_pretrained(CLIPModel, folder)
    return HFDualModel(spec, hf, hf_clip_tokenizer(folder, spec.text_context)).eval()


def _build(folder: Path | None) -> HFDualModel:
    return build_pubmedclip(SPEC, default_config(), folder)


def tiny_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(_tiny.TOWER, vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(_tiny.TOWER, image_size=_tiny.VIT_SIZE, patch_size=16),
        projection_dim=32,
    )


SPEC = register(
    ModelSpec(
        name="pubmedclip",
        family="hf_clip",
        build=_build,
        weight_files=(*HF_FILES, "vocab.json", "merges.txt"),
        sha256={f: "" for f in (*HF_FILES, "vocab.json", "merges.txt")},
        source="https://huggingface.co/flaviagiammarino/pubmed-clip-vit-base-patch32 "
        "(original: https://huggingface.co/sarahESL/PubMedCLIP)",
        license="MIT (conversion and sarahESL/PubMedCLIP code); original weights card: CC",
        image=CLIP_IMAGE,
        embed_dim=512,
        prompt_style="clip_ensemble",
        lora_targets=r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
        lora=qkv_lora(r"vision_model\.encoder\.layers\.\d+\.self_attn", "CLIPModel"),
        notes="transformers CLIPModel (ViT-B/32); CLIP 224 preprocessing (authors trained with "
        "ImageNet mean/std at 250 px); training logits used exp(0.01)/exp(0.07), irrelevant to ranking",
        feature_dim=None,
        text_context=77,
        tiny=TinySpec(
            lambda spec: build_pubmedclip(spec, tiny_config(), None),
            _tiny.VIT_SIZE,
            32,
            None,
            "CLIPModel: vision and text 2 x 32, patch 16",
        ),
    )
)
