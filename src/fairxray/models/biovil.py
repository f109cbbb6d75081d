"""BioViL (Boecking et al. 2022, Microsoft): a ResNet-50 image encoder and the CXR-BERT
(specialized) text encoder, both projected to a 128-d joint space.

Layout as hi-ml-multimodal 0.2.2 (``health_multimodal``, MIT) distributes it, in one folder:

- ``biovil_image_resnet50_proj_size_128.pt``: ``torch.save(ImageModel.state_dict())`` of
  ``ImageModel("resnet50", joint_feature_size=128)``: ``encoder.encoder.*`` (a torchvision
  ResNet-50 that keeps its unused ``fc``) and ``projector.model.{0,1,3}.*`` (1x1 conv 2048->128
  without bias, BatchNorm, ReLU, 1x1 conv 128->128). The image embedding is the spatial mean of
  the projected layer-4 patch embeddings; the linear-probe feature is the pooled 2048-d map.
- ``config.json`` + ``model.safetensors`` + ``vocab.txt``: the hub repo
  ``microsoft/BiomedVLP-CXR-BERT-specialized`` (revision v1.1), a ``CXRBertModel`` =
  ``BertForMaskedLM`` + ``cls_projection_head`` (768->128, GELU, LayerNorm, 128->128) applied to
  the last hidden state's CLS token. The hub's remote code is not executed: the two small classes
  below re-implement it with the same attribute names, and the weights load strictly through
  ``from_pretrained`` (tied MLM weights handled by transformers).

Preprocessing (``create_chest_xray_transform_for_inference(512, 512)``): shorter side to 512
(bilinear), centre crop 512, scale to [0, 1], no mean/std normalisation, grey repeated to 3
channels. Upstream also min-max stretches each image to 0-255 when loading it; the NIH PNGs are
already 8-bit, so that stretch is not applied to the cached pixels (a documented difference).
Zero-shot upstream compares raw cosines (logit scale 1.0 here) with report-style sentences.

LoRA (``train.lora_config: model``): this package's extension, not the paper's: its ResNet rule,
rank 4 with scale 1 on the layer1-4 bottleneck convs (294,144 adapter parameters); the projector
is not adapted.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import nn

from fairxray.models import _tiny
from fairxray.models._bert import bert_tokenizer, bert_tokens
from fairxray.models._hf import strict_from_pretrained
from fairxray.models.base import ClipModel
from fairxray.models.registry import ImageSpec, LoraSpec, ModelSpec, TinySpec, register
from fairxray.models.weights import read_state_file, strict_load

IMAGE_WEIGHTS = "biovil_image_resnet50_proj_size_128.pt"
TEXT_FILES = ("config.json", "model.safetensors", "vocab.txt")
JOINT = 128
CONTEXT = 128
IMAGE = ImageSpec(512, "shortest+center_crop", None, "bilinear", 3, (0.0,) * 3, (1.0,) * 3, "0-1")


class _Encoder(nn.Module):
    """``ImageEncoder``: ``encoder`` = the ResNet-50 trunk, returning the layer-4 map."""

    def __init__(self, trunk: nn.Module | None = None) -> None:
        super().__init__()
        from torchvision.models import resnet50

        self.encoder = trunk if trunk is not None else resnet50(weights=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.encoder
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))


class _Projector(nn.Module):
    """hi-ml's ``MLP(2048, 128, hidden_dim=128, use_1x1_convs=True)``."""

    def __init__(self, in_dim: int = 2048, out_dim: int = JOINT) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 1, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class BioVilImage(nn.Module):
    """``ImageModel``'s ``projected_global_embedding`` ``[B, 128]``."""

    def __init__(self, trunk: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = _Encoder(trunk)
        self.projector = _Projector()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x)).mean(dim=(2, 3))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.encoder(x), 1), 1)


@cache
def _text_classes():
    from transformers import BertConfig, BertForMaskedLM

    class CXRBertConfig(BertConfig):
        model_type = "cxr-bert"

        def __init__(self, projection_size: int = JOINT, **kwargs) -> None:
            super().__init__(**kwargs)
            self.projection_size = projection_size

    class BertProjectionHead(nn.Module):
        def __init__(self, config) -> None:
            super().__init__()
            self.dense_to_hidden = nn.Linear(config.hidden_size, config.projection_size)
            self.transform_act_fn = nn.functional.gelu
            self.LayerNorm = nn.LayerNorm(config.projection_size, eps=1e-12)
            self.dense_to_output = nn.Linear(config.projection_size, config.projection_size)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return self.dense_to_output(
                self.LayerNorm(self.transform_act_fn(self.dense_to_hidden(h)))
            )

    class CXRBertModel(BertForMaskedLM):
        config_class = CXRBertConfig

        def __init__(self, config) -> None:
            super().__init__(config)
            self.cls_projection_head = BertProjectionHead(config)
            self.post_init()

        def projected(self, input_ids, attention_mask) -> torch.Tensor:
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.cls_projection_head(h[:, 0, :])

    return CXRBertConfig, CXRBertModel


def default_text_config():
    config_cls, _ = _text_classes()
    # CXR-BERT-specialized: BERT-base, vocab 30522, 512 positions, projection 128.
    return config_cls(projection_size=JOINT, vocab_size=30522)


class BioVilModel(ClipModel):
    def __init__(self, spec: ModelSpec, image: BioVilImage, text: nn.Module, tokenizer) -> None:
        super().__init__(spec)
        self.vision = image
        self.text = text
        self._tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return bert_tokens(self._tokenizer, texts, self.spec.text_context)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.text.projected(tokens["input_ids"], tokens["attention_mask"])

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def logit_scale(self) -> float:
        return 1.0

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision.pooled(images)


def build_biovil(
    spec: ModelSpec, text_config, folder: Path | None, image: BioVilImage | None = None
) -> BioVilModel:
    _, text_cls = _text_classes()
    image = image if image is not None else BioVilImage()
    if folder is None:
        text = text_cls(text_config)
    else:
        path = Path(folder) / IMAGE_WEIGHTS
        strict_load(image, read_state_file(path), source=str(path))
        text = strict_from_pretrained(text_cls, Path(folder))
    tok = bert_tokenizer(folder, lower_case=True)  # CXR-BERT's vocabulary is uncased
    return BioVilModel(spec, image, text, tok).eval()


def _build(folder: Path | None) -> BioVilModel:
    return build_biovil(SPEC, default_text_config(), folder)


def _build_tiny(spec: ModelSpec) -> BioVilModel:
    config_cls, _ = _text_classes()
    text = _tiny.bert_config(config_cls, projection_size=JOINT, vocab_size=30522)
    return build_biovil(spec, text, None, BioVilImage(_tiny.resnet50_trunk()))


SPEC = register(
    ModelSpec(
        name="biovil",
        family="biovil",
        build=_build,
        weight_files=(IMAGE_WEIGHTS, *TEXT_FILES),
        # md5 published in hi-ml's pretrained.py (02ce6ee4...); its sha256 is not published.
        sha256=dict.fromkeys((IMAGE_WEIGHTS, *TEXT_FILES), ""),
        source="https://huggingface.co/microsoft/BiomedVLP-CXR-BERT-specialized (revision v1.1: "
        f"{IMAGE_WEIGHTS} and the text model)",
        license="MIT (hi-ml-multimodal; model card: research use only)",
        image=IMAGE,
        embed_dim=JOINT,
        prompt_style="report_ensemble",
        lora_targets=r"encoder\.encoder\.layer[1-4]\.\d+\.conv[123]",
        lora=LoraSpec(
            targets=r"encoder\.encoder\.layer[1-4]\.\d+\.conv[123]",
            rank=4,
            scale=1.0,
            source="fairxray extension, not the paper's: its ResNet rule (rank 4, scale 1, "
            "layer1-4 convs)",
        ),
        notes="ResNet-50 + 1x1-conv projector (patch mean) and CXR-BERT CLS projection, 128-d; "
        "512 px, no normalisation; raw cosine",
        feature_dim=2048,
        text_context=CONTEXT,
        tiny=TinySpec(
            _build_tiny,
            _tiny.RESNET_SIZE,
            JOINT,
            2048,
            "torchvision ResNet, one bottleneck per stage, inner width / 4; CXR-BERT 2 x 32",
        ),
        random_vocab_note="random build: generated character-level vocabulary, not CXR-BERT's",
    )
)
