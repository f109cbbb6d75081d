"""The one interface every model family implements: :class:`ClipModel`.

A family subclass provides ``vision`` (image tower incl. its projection, returning unnormalised
``[B, embed_dim]``; this is what LoRA / full fine-tuning adapt), ``tokenize``, ``text_forward``,
``text_modules`` and ``logit_scale``. Preprocessing comes from the spec, never from shared code
that assumes one normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairxray.models.preprocess import preprocess_pixels
from fairxray.models.spec import ModelSpec


class ClipModel(nn.Module):
    spec: ModelSpec
    vision: nn.Module

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self._text_frozen = False

    # -- to implement per family -------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token tensors (``input_ids`` and, for BERT families, ``attention_mask``) on CPU."""
        raise NotImplementedError

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings ``[T, embed_dim]``."""
        raise NotImplementedError

    def text_modules(self) -> list[nn.Module]:
        """Every module of the text tower (frozen by :meth:`freeze_text`)."""
        raise NotImplementedError

    def logit_scale(self) -> float:
        """Multiplier of the cosine before the softmax (exp'd; 1.0 where upstream uses raw cosine)."""
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-projection image features ``[B, feature_dim]`` where the family exposes them."""
        raise NotImplementedError(f"{self.spec.name}: no pre-projection features exposed")

    # -- shared ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W]`` cache pixels -> float ``[B, C, S, S]`` on the same device."""
        return preprocess_pixels(pixels, self.spec.image)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.vision(images)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings")
        dev = self.device
        tokens = {k: v.to(dev) for k, v in self.tokenize(list(texts)).items()}
        z = self.text_forward(**tokens)
        return F.normalize(z, dim=-1) if normalize else z

    def freeze_text(self) -> None:
        """Text tower frozen and kept in eval mode (only image towers are adapted)."""
        for m in self.text_modules():
            m.requires_grad_(False)
            m.eval()
        self._text_frozen = True

    def train(self, mode: bool = True) -> ClipModel:
        super().train(mode)
        if self._text_frozen:
            for m in self.text_modules():
                m.eval()
        return self
