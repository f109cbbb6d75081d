"""BiomedCLIP (open_clip ``CustomTextCLIP``: timm ViT-B/16 + PubMedBERT, context 256).

Built offline: the model config is written out here (it equals the hub's
``open_clip_config.json``) and the text tower's BERT config ships in
``fairxray/resources/biomedclip/config.json``, so nothing calls ``AutoConfig.from_pretrained`` on a
hub name. Real weights: ``open_clip_pytorch_model.bin`` (weights-only pickle) with the stale
``text.transformer.embeddings.position_ids`` dropped; tokenizer from the folder's ``vocab.txt``.
"""

from __future__ import annotations

import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

from fairxray.models import _tiny
from fairxray.models._bert import bert_tokenizer, bert_tokens, is_stale_buffer
from fairxray.models.openclip import CLIP_IMAGE, OpenClipModel
from fairxray.models.registry import LoraSpec, ModelSpec, TinySpec, register
from fairxray.models.weights import read_state_file, strict_load, weight_path

WEIGHTS = "open_clip_pytorch_model.bin"
CONTEXT = 256


def model_config(bert_config_dir: str) -> dict:
    return {
        "embed_dim": 512,
        "vision_cfg": {
            "image_size": 224,
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
        },
        "text_cfg": {
            "context_length": CONTEXT,
            "hf_model_name": bert_config_dir,
            "hf_model_pretrained": False,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
        },
    }


def build_biomedclip(spec: ModelSpec, model_cfg: dict, folder: Path | None) -> OpenClipModel:
    import open_clip

    clip = open_clip.CustomTextCLIP(**model_cfg)
    if folder is not None:
        path = weight_path(folder, WEIGHTS)
        strict_load(clip, read_state_file(path), source=str(path), drop=is_stale_buffer)
    tok = bert_tokenizer(folder, lower_case=True)  # PubMedBERT is uncased
    context = spec.text_context

    def tokenize(texts: list[str]):
        # CLS pooling with a pad-id mask inside open_clip: padding length does not matter.
        return {"input_ids": bert_tokens(tok, texts, context)["input_ids"]}

    return OpenClipModel(spec, clip, tokenize).eval()


def _build(folder: Path | None) -> OpenClipModel:
    with resources.as_file(resources.files("fairxray") / "resources" / "biomedclip") as cfg_dir:
        return build_biomedclip(SPEC, model_config(str(cfg_dir)), folder)


TINY_BLOCKS = 2


@cache
def _tiny_bert_dir() -> str:
    """A 2-layer, 32-wide BERT config (PubMedBERT's vocabulary size) for the tiny text tower."""
    folder = Path(tempfile.mkdtemp(prefix="fairxray-tiny-bert-"))
    _tiny.bert_config(vocab_size=30522, max_position_embeddings=512).save_pretrained(str(folder))
    return str(folder)


def _build_tiny(spec: ModelSpec) -> OpenClipModel:
    """The same CustomTextCLIP: timm's ViT (vit_tiny's 192-wide blocks, the first two kept, its
    position table resampled to 32 px by timm's own ``set_input_size``) and a tiny BERT."""
    cfg = model_config(_tiny_bert_dir())
    cfg["embed_dim"] = 32
    cfg["vision_cfg"] = dict(cfg["vision_cfg"], timm_model_name="vit_tiny_patch16_224")
    model = build_biomedclip(spec, cfg, None)
    trunk = model.vision.trunk
    trunk.blocks = trunk.blocks[:TINY_BLOCKS]
    model.vision.set_input_size(_tiny.VIT_SIZE)
    return model


SPEC = register(
    ModelSpec(
        name="biomedclip",
        family="openclip_hf",
        build=_build,
        weight_files=(WEIGHTS, "vocab.txt"),
        sha256={WEIGHTS: "", "vocab.txt": ""},
        source="https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        license="MIT (model card: research use only)",
        image=CLIP_IMAGE,
        embed_dim=512,
        prompt_style="biomedclip",
        lora_targets=r"trunk\.blocks\.\d+\.attn\.qkv",
        # The released code cannot run on BiomedCLIP (it looks for OpenAI names); timm's fused
        # qkv Linear is the same in-projection as CLIP's in_proj_weight: same rank, scale, size.
        lora=LoraSpec(
            targets=r"trunk\.blocks\.\d+\.attn\.qkv",
            rank=16,
            scale=1.0,
            source="analogue of the released ViT LoRA: rank 16, scale 1 on the fused qkv",
        ),
        notes="timm vit_base_patch16_224 (CLS) + PubMedBERT (CLS, MLP proj); ctx 256",
        feature_dim=768,
        text_context=CONTEXT,
        tiny=TinySpec(
            _build_tiny,
            _tiny.VIT_SIZE,
            32,
            192,
            "timm ViT 2 x 192, patch 16; BERT 2 x 32",
        ),
        random_vocab_note="random build: generated character-level vocabulary, not PubMedBERT's",
    )
)
