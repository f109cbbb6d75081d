"""MedCLIP (RyanWangZf/MedCLIP), ResNet-50 and Swin-T ("ViT") variants, re-implemented offline.

Not the PyPI ``medclip`` package (it downloads at construction and hard-codes CUDA). Submodules
carry upstream names (``model``, ``projection_head``) so ``pytorch_model.bin`` loads strictly after
the top-level map ``vision_model.`` -> ``vision.``, ``text_model.`` -> ``text.``, dropping stale
buffers (BERT ``position_ids``) and mapping Swin 4.x names to transformers 5.x.

Text embedding: mean over tokens of hidden layers 1, 2 and 12, then the projection. Upstream
averages over padding too, which makes an embedding depend on the other prompts padded with it;
``encode_text`` averages over real tokens only (= upstream's output for a prompt tokenised on its
own); ``encode_text_padded`` reproduces upstream's zero-shot batches (one class's prompts padded
together), which the default zero-shot rule ``medclip_prompt_mean`` uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from fairxray.models import _tiny
from fairxray.models._bert import bert_tokenizer, bert_tokens, is_stale_buffer, swin_v4_to_v5
from fairxray.models.base import ClipModel
from fairxray.models.registry import ImageSpec, LoraSpec, ModelSpec, TinySpec, register
from fairxray.models.weights import read_state_file, strict_load, weight_path

WEIGHTS = "pytorch_model.bin"
MEDCLIP_IMAGE = ImageSpec(
    224, "pad_square", None, "bicubic", 1, (0.5862785803043838,), (0.27950088968644304,), "0-1"
)
BIO_CLINICAL_BERT_VOCAB = 28996
LOGIT_SCALE_MAX = 4.6052  # upstream clamps log scale to [0, ln 100]


class MedCLIPTextModel(nn.Module):
    def __init__(self, bert_config) -> None:
        from transformers import BertModel

        super().__init__()
        self.model = BertModel(bert_config)  # with pooler, as AutoModel gives upstream
        self.projection_head = nn.Linear(bert_config.hidden_size, 512, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mean_over_padding: bool = False,
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        hs = out.hidden_states
        layers = torch.stack([hs[1], hs[2], hs[-1]]).mean(0)  # [T, L, H]
        if mean_over_padding:  # upstream: the mean runs over every position, pads included
            return self.projection_head(layers.mean(1))
        m = attention_mask.unsqueeze(-1).to(layers.dtype)
        return self.projection_head((layers * m).sum(1) / m.sum(1).clamp_min(1.0))


class MedCLIPVisionModel(nn.Module):
    """ResNet-50 whose ``fc`` is the 2048 -> 512 projection (no bias)."""

    def __init__(self, trunk: nn.Module | None = None) -> None:
        import torchvision

        super().__init__()
        self.model = trunk if trunk is not None else torchvision.models.resnet50(weights=None)
        self.model.fc = nn.Linear(2048, 512, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.repeat(1, 3, 1, 1)
        return self.model(pixel_values)


class MedCLIPVisionModelViT(nn.Module):
    """Swin-T, pooled output -> 768 -> 512 projection (no bias)."""

    def __init__(self, swin_config) -> None:
        from transformers import SwinModel

        super().__init__()
        self.model = SwinModel(swin_config)
        self.projection_head = nn.Linear(self.model.num_features, 512, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.repeat(1, 3, 1, 1)
        return self.projection_head(self.model(pixel_values=pixel_values).pooler_output)


class MedCLIPModel(ClipModel):
    def __init__(self, spec: ModelSpec, vision: nn.Module, bert_config, tokenizer) -> None:
        super().__init__(spec)
        self.vision = vision
        self.text = MedCLIPTextModel(bert_config)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return bert_tokens(self._tokenizer, texts, self.spec.text_context)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def encode_text_padded(self, texts: list[str]) -> torch.Tensor:
        """Upstream's zero-shot text embeddings (normalised): ``texts`` (one class's prompts)
        tokenised together, padded to the longest, and averaged over the padding too, so a
        prompt's embedding depends on the other prompts of its class."""
        dev = self.device
        tok = {k: v.to(dev) for k, v in self.tokenize(list(texts)).items()}
        z = self.text(tok["input_ids"], tok["attention_mask"], mean_over_padding=True)
        return torch.nn.functional.normalize(z, dim=-1)

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def freeze_text(self) -> None:
        super().freeze_text()
        self.log_logit_scale.requires_grad_(False)

    def logit_scale(self) -> float:
        return float(self.log_logit_scale.detach().clamp(0, LOGIT_SCALE_MAX).exp())

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"vision_model.{k}": v for k, v in self.vision.state_dict().items()}
        sd.update({f"text_model.{k}": v for k, v in self.text.state_dict().items()})
        sd["logit_scale"] = self.log_logit_scale.detach()
        return sd


def upstream_to_ours(key: str) -> str:
    for old, new in (("vision_model.", "vision."), ("text_model.", "text.")):
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    if key == "logit_scale":
        return "log_logit_scale"
    return swin_v4_to_v5(key) if key.startswith("vision.model.encoder.") else key


def build_medclip(
    spec: ModelSpec, vision: nn.Module, bert_config, folder: Path | None
) -> MedCLIPModel:
    model = MedCLIPModel(spec, vision, bert_config, bert_tokenizer(folder))
    if folder is not None:
        path = weight_path(folder, WEIGHTS)
        strict_load(
            model,
            read_state_file(path),
            source=str(path),
            drop=is_stale_buffer,
            rename=upstream_to_ours,
        )
    return model.eval()


def default_bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=BIO_CLINICAL_BERT_VOCAB)


def default_swin_config():
    from transformers import SwinConfig

    return SwinConfig()  # defaults = microsoft/swin-tiny-patch4-window7-224


_COMMON = dict(
    family="medclip",
    sha256={WEIGHTS: "", "vocab.txt": ""},
    license="no LICENSE file upstream (setup.py classifier: BSD); see RyanWangZf/MedCLIP#54",
    image=MEDCLIP_IMAGE,
    embed_dim=512,
    prompt_style="report_ensemble",
    zero_shot="medclip_prompt_mean",
    text_context=77,
    random_vocab_note="random build: generated character-level vocabulary, not Bio_ClinicalBERT's",
)
# The released code: rank 4 on every bottleneck conv (conv1-3) of layer1-4, B @ A added unscaled
# (peft conv LoRA: A = Conv2d(in, r, k), B = Conv2d(r, out, 1); 294,144 parameters at rank 4).
RESNET_LORA = LoraSpec(
    targets=r"model\.layer[1-4]\.\d+\.conv[123]",
    rank=4,
    scale=1.0,
    source="released code: rank 4 on layer1-4 bottleneck convs, no scaling",
)
# Swin keeps q, k and v as separate Linears (no fused in-projection): rank 16 on each, scale 1,
# the nearest analogue of the released ViT LoRA (which cannot run on MedCLIP as released).
SWIN_LORA = LoraSpec(
    targets=r"model\.encoder\.layers\.\d+\.blocks\.\d+\.attention\.(q_proj|k_proj|v_proj)",
    rank=16,
    scale=1.0,
    source="analogue of the released ViT LoRA: rank 16, scale 1 on Swin's q, k, v",
)
_VOCAB_NOTE = "vocab.txt from https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT"


def tiny_swin_config():
    from transformers import SwinConfig

    return SwinConfig(
        image_size=_tiny.VIT_SIZE,
        patch_size=4,
        embed_dim=16,
        depths=[1, 2],
        num_heads=[1, 2],
        window_size=4,
    )


def tiny_bert_config():
    return _tiny.bert_config(vocab_size=BIO_CLINICAL_BERT_VOCAB)


def _tiny_resnet(spec: ModelSpec) -> MedCLIPModel:
    return build_medclip(spec, MedCLIPVisionModel(_tiny.resnet50_trunk()), tiny_bert_config(), None)


def _tiny_vit(spec: ModelSpec) -> MedCLIPModel:
    vision = MedCLIPVisionModelViT(tiny_swin_config())
    return build_medclip(spec, vision, tiny_bert_config(), None)


_TINY_TEXT = "BERT 2 x 32"


def _build_resnet(folder: Path | None) -> MedCLIPModel:
    return build_medclip(SPEC_RESNET, MedCLIPVisionModel(), default_bert_config(), folder)


def _build_vit(folder: Path | None) -> MedCLIPModel:
    vision = MedCLIPVisionModelViT(default_swin_config())
    return build_medclip(SPEC_VIT, vision, default_bert_config(), folder)


SPEC_RESNET = register(
    ModelSpec(
        name="medclip-resnet",
        build=_build_resnet,
        weight_files=(WEIGHTS, "vocab.txt"),
        source="https://storage.googleapis.com/pytrial/medclip-pretrained.zip (unzip); "
        + _VOCAB_NOTE,
        lora_targets=RESNET_LORA.targets,
        lora=RESNET_LORA,
        notes="torchvision ResNet-50, fc = Linear(2048, 512, no bias); Bio_ClinicalBERT",
        feature_dim=2048,
        tiny=TinySpec(
            _tiny_resnet,
            _tiny.RESNET_SIZE,
            512,
            2048,
            f"torchvision ResNet, one bottleneck per stage, inner width / 4; {_TINY_TEXT}",
        ),
        **_COMMON,
    )
)
SPEC_VIT = register(
    ModelSpec(
        name="medclip-vit",
        build=_build_vit,
        weight_files=(WEIGHTS, "vocab.txt"),
        source="https://storage.googleapis.com/pytrial/medclip-vit-pretrained.zip (unzip); "
        + _VOCAB_NOTE,
        lora_targets=SWIN_LORA.targets,
        lora=SWIN_LORA,
        notes="Swin-T (transformers 5 names; 4.x checkpoint keys mapped) + Linear(768, 512)",
        feature_dim=768,
        tiny=TinySpec(
            _tiny_vit, _tiny.VIT_SIZE, 512, 32, f"Swin embed 16, depths (1, 2); {_TINY_TEXT}"
        ),
        **_COMMON,
    )
)
