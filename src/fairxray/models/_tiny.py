"""Shared pieces of the ``model_scale: tiny`` builds (:class:`~fairxray.models.spec.TinySpec`).

A tiny build is the family's own upstream classes at random init with few, narrow layers and a
small native image size, so the demo graph can run every family on a CPU (measured: one tiny
model, zero_shot and linear_probe, one protocol: 4.5 min on 2 shared cores, mostly the graph's
fixed stages, as for the toy model). The
tokenizers are the full builds' (vocabulary sizes unchanged). Nothing is ever loaded into a tiny
build: it exists for the demo and tests only, and every output that records a model says
``model_scale: tiny``.
"""

from __future__ import annotations

from torch import nn

# Transformer towers: 2 layers, 2 heads, width 32 (MLP 64).
TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
VIT_SIZE = 32  # px fed to the tiny transformer image towers
RESNET_SIZE = 32  # px fed to the tiny ResNets (5 stride-2 stages: a 1 x 1 final map)


def bert_config(cls=None, **kw):
    """A 2-layer, 32-wide BERT config (``cls`` = a BertConfig subclass); vocabulary and
    positions as given (the full model's, so its tokenizer is unchanged)."""
    if cls is None:
        from transformers import BertConfig

        cls = BertConfig
    return cls(**TOWER, **kw)


def resnet50_trunk() -> nn.Module:
    """torchvision's ``ResNet`` with ResNet-50's bottleneck blocks and channel plan (64 stem,
    256/512/1024/2048 block outputs, so every projection keeps its shape) but one block per
    stage and a quarter of the inner width (``width_per_group=16``)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)


def openclip_text_cfg() -> dict:
    """open_clip's CLIP text tower, 2 layers of width 32 (BPE vocabulary and context 77 kept)."""
    return {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def openclip_vit_cfg(patch: int) -> dict:
    return {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": VIT_SIZE,
            "layers": 2,
            "width": 64,
            "patch_size": patch,
            "head_width": 32,
        },
        "text_cfg": openclip_text_cfg(),
    }


def openclip_resnet_cfg() -> dict:
    """open_clip's ModifiedResNet, one block per stage, stem width 8 (attention pool 256 wide)."""
    return {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": RESNET_SIZE,
            "layers": [1, 1, 1, 1],
            "width": 8,
            "head_width": 16,
        },
        "text_cfg": openclip_text_cfg(),
    }
