"""CheXzero (Tiu et al. 2022): OpenAI CLIP ViT-B/32 fine-tuned on MIMIC-CXR image-report pairs.

Upstream checkpoint format: a plain ``state_dict`` saved with ``torch.save`` in the OpenAI CLIP
key layout (302 tensors), loaded upstream by ``model.load_state_dict(torch.load(path))`` on
``clip.load("ViT-B/32")``; here it loads strictly into open_clip's ``ViT-B-32-quickgelu`` (the
same keys) and is read with ``weights_only=True``. The release is ten such files in one Google
Drive folder; ``best_64_5e-05_original_22000_0.864.pt`` is the one peers use (the paper's
numbers average all ten; one checkpoint is registered here).

Preprocessing as CheXzero's ``data_process.preprocess`` + ``CXRTestDataset``: grey image padded
to a square with black (the upstream resizes the longer side to 320 and pads), 3 channels,
normalised on the 0-255 scale with mean 101.48761 / std 83.43944, then resized to 224 (bicubic).
Normalisation is affine, so resizing once to 224 after padding equals the upstream order up to
rounding of the 320 px intermediate, which is skipped.

Zero-shot upstream is a positive/negative pair per label ("{}" vs "no {}"); the 6x200 protocols
are multiclass, so the positive templates are compared across classes (prompt style
``chexzero``: the bare finding name, as CheXzero's positive template).

LoRA (``train.lora_config: model``): this package's extension, not the paper's (the paper ran no
CheXzero). Its tower is OpenAI's ViT-B/32, so it takes the paper's ViT rule unchanged: rank 16,
scale 1 on each visual block's fused ``in_proj_weight`` (589,824 adapter parameters).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fairxray.models import _tiny
from fairxray.models.openclip import (
    ARCHS,
    CLIP_LORA,
    OpenClipModel,
    _config,
    build_openai_clip,
    tiny_openai_clip,
)
from fairxray.models.registry import ImageSpec, ModelSpec, register

WEIGHTS = "best_64_5e-05_original_22000_0.864.pt"
ARCH = "ViT-B-32-quickgelu"
IMAGE = ImageSpec(224, "pad_square", None, "bicubic", 3, (101.48761,) * 3, (83.43944,) * 3, "0-255")


def _build(folder: Path | None) -> OpenClipModel:
    return build_openai_clip(SPEC, _config(ARCH), folder)


ARCHS["chexzero"] = ARCH
SPEC = register(
    ModelSpec(
        name="chexzero",
        family="openclip_openai",
        build=_build,
        weight_files=(WEIGHTS,),
        sha256={WEIGHTS: ""},
        source="https://github.com/rajpurkarlab/CheXzero (weights: Google Drive folder "
        "1makFLiEMbSleYltaRxw81aBhEDMpVwno)",
        license="MIT (rajpurkarlab/CheXzero code); weights: no separate terms, trained on "
        "credentialed MIMIC-CXR",
        image=IMAGE,
        embed_dim=512,
        prompt_style="chexzero",
        lora_targets=r"transformer\.resblocks\.\d+\.attn",
        lora=dataclasses.replace(
            CLIP_LORA,
            source="fairxray extension, not the paper's: its ViT rule (rank 16, scale 1, "
            "in_proj_weight) on CheXzero's CLIP ViT-B/32",
        ),
        notes="open_clip ViT-B-32-quickgelu, plain state_dict; 0-255 normalisation; one of ten "
        "released checkpoints",
        feature_dim=768,
        text_context=77,
        tiny=tiny_openai_clip(_tiny.openclip_vit_cfg(16), 64),
    )
)
