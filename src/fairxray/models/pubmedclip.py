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
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fairxray.models._hf import Projected, hf_clip_tokenizer, strict_from_pretrained
from fairxray.models.base import ClipModel
from fairxray.models.openclip import CLIP_IMAGE
from fairxray.models.registry import ModelSpec, register

HF_FILES = ("config.json", "model.safetensors")


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
        notes="transformers CLIPModel (ViT-B/32); CLIP 224 preprocessing (authors trained with "
        "ImageNet mean/std at 250 px); training logits used exp(0.01)/exp(0.07), irrelevant to ranking",
        feature_dim=None,
        text_context=77,
    )
)
