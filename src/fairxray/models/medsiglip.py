"""MedSigLIP (Google Health AI, 2025): SigLIP so400m adapted to medical images at 448 px, a
transformers ``SiglipModel`` checkpoint (``google/medsiglip-448``): ``config.json`` +
``model.safetensors`` + ``tokenizer.json``.

The real model is always built from the folder's own ``config.json``; the random build (demo,
tests) uses the SigLIP so400m/14 shape at 448 px written below (1152 wide, 27 layers, 16 heads,
MLP 4304; text 64 tokens, vocab 32000). SigLIP has no projection layers: both towers end in
1152-d pooled outputs (the vision tower's attention-pooling head, the text tower's last-token
head). Text is padded to 64 tokens, as SigLIP was trained (its pooling reads the last position).
Zero-shot uses ``softmax(logit_scale * cos)`` over classes: SigLIP's sigmoid bias cancels there.

Tokenizer: ``tokenizer.json`` (a fast tokenizers file, read without sentencepiece). A download
holding only ``spiece.model`` can be converted once with transformers + sentencepiece:
``AutoTokenizer.from_pretrained(folder).save_pretrained(folder)``. The random build uses a
generated character vocabulary (not MedSigLIP's).

Preprocessing (``SiglipImageProcessor``): resize to 448 x 448 (bilinear, no crop), scale to
[0, 1], normalise with mean 0.5 / std 0.5 per channel.

LoRA (``train.lora_config: model``): this package's extension, not the paper's: its ViT rule
(rank 16, scale 1) on every vision layer's ``q_proj``, ``k_proj`` and ``v_proj``
(27 x 6 x 16 x 1152 = 2,985,984 adapter parameters on so400m).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fairxray.errors import UserError
from fairxray.models import _tiny
from fairxray.models._bert import generated_vocab
from fairxray.models._hf import strict_from_pretrained
from fairxray.models.pubmedclip import HF_FILES, HFDualModel, qkv_lora
from fairxray.models.registry import ImageSpec, ModelSpec, TinySpec, register

CONTEXT = 64
IMAGE = ImageSpec(448, "stretch", None, "bilinear", 3, (0.5,) * 3, (0.5,) * 3, "0-1")


def default_config():
    from transformers import SiglipConfig

    tower = {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
    }
    return SiglipConfig(
        text_config={**tower, "vocab_size": 32000, "max_position_embeddings": CONTEXT},
        vision_config={**tower, "image_size": 448, "patch_size": 14},
    )


def tiny_config():
    from transformers import SiglipConfig

    return SiglipConfig(
        text_config={**_tiny.TOWER, "vocab_size": 32000, "max_position_embeddings": CONTEXT},
        vision_config={**_tiny.TOWER, "image_size": _tiny.VIT_SIZE, "patch_size": 8},
    )


def siglip_tokenizer(folder: Path | None, context: int):
    """The folder's ``tokenizer.json`` (+ its special-token files), padded to ``context``;
    ``folder=None`` -> the generated vocabulary (random builds)."""
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    if folder is None:
        tok = BertTokenizer(vocab=generated_vocab(), do_lower_case=True)
    else:
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        if tok.pad_token is None:  # SigLIP pads with its end-of-sequence token
            if tok.eos_token is None:
                raise UserError(f"{folder}/tokenizer.json: defines neither a pad nor an eos token")
            tok.pad_token = tok.eos_token

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        # SigLIP's text tower pools the last position and takes no mask: pad to the full length.
        enc = tok(
            texts, padding="max_length", truncation=True, max_length=context, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"]}

    return tokenize


def build_medsiglip(spec: ModelSpec, config, folder: Path | None) -> HFDualModel:
    from transformers import SiglipModel

    hf = SiglipModel(config) if folder is None else strict_from_pretrained(SiglipModel, folder)
    return HFDualModel(spec, hf, siglip_tokenizer(folder, spec.text_context)).eval()


def _build(folder: Path | None) -> HFDualModel:
    return build_medsiglip(SPEC, default_config(), folder)


SPEC = register(
    ModelSpec(
        name="medsiglip",
        family="hf_siglip",
        build=_build,
        weight_files=(*HF_FILES, "tokenizer.json"),
        sha256={f: "" for f in (*HF_FILES, "tokenizer.json")},
        source="https://huggingface.co/google/medsiglip-448",
        license="Health AI Developer Foundations terms of use (gated on the hub)",
        image=IMAGE,
        embed_dim=1152,
        prompt_style="clip_ensemble",
        lora_targets=r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
        lora=qkv_lora(r"vision_model\.encoder\.layers\.\d+\.self_attn", "SiglipModel"),
        notes="transformers SiglipModel, 448 px, so400m/14 towers; softmax over classes "
        "(the sigmoid bias cancels); text padded to 64 tokens",
        feature_dim=None,
        text_context=CONTEXT,
        tiny=TinySpec(
            lambda spec: build_medsiglip(spec, tiny_config(), None),
            _tiny.VIT_SIZE,
            32,
            None,
            "SiglipModel: vision and text 2 x 32, patch 8",
        ),
        random_vocab_note="random build: generated character-level vocabulary, not MedSigLIP's",
    )
)
