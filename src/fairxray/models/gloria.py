"""GLoRIA (marshuang80/gloria), ResNet-50 + Bio_ClinicalBERT, re-implemented.

Not the PyPI ``gloria`` package (an unrelated time-series library). Upstream ships a Lightning
checkpoint that needs unpickling; ``fairxray convert-gloria`` turns it into
``gloria_resnet50.safetensors`` (upstream key names after stripping ``gloria.``), which is what
this loader reads (strictly, after ``img_encoder.`` -> ``vision.``, ``text_encoder.`` -> ``text.``
and dropping stale buffers).

Image: input bilinearly upsampled to 299 (align_corners=True) inside the tower, ResNet-50 avgpool
-> ``global_embedder`` Linear(2048, 768): the CLIP interface (``vision``). The local branch
(layer3 -> ``local_embedder``, ``ImageEncoder.local_global``) serves upstream's zero-shot rule
(word-region similarity, ``fairxray.adapt.zero_shot``). Text: prompts are cleaned as upstream's
``process_text`` does (:func:`gloria_text`); upstream's sentence embedding is the
sum over the last 4 layers of the mean over word positions, where word pieces are merged by
summing and the mean divides by the padded length (97). Merging by summation keeps the total, so
the direction equals the masked token sum we compute; cosine scores are identical.
Logit scale: 10, GLoRIA's global-loss temperature (``temp3`` in its pretraining config).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fairxray.models import _tiny
from fairxray.models._bert import bert_tokenizer, bert_tokens, is_stale_buffer
from fairxray.models.base import ClipModel
from fairxray.models.medclip import RESNET_LORA, default_bert_config, tiny_bert_config
from fairxray.models.registry import ImageSpec, ModelSpec, TinySpec, register
from fairxray.models.weights import read_state_file, strict_load

WEIGHTS = "gloria_resnet50.safetensors"
CONTEXT = 97
GLOBAL_TEMPERATURE = 10.0
LAST_N_LAYERS = 4


_NUMBERED = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")


def gloria_text(text: str) -> str:
    """GLoRIA's report cleaning before BERT (upstream ``process_text``), re-implemented:
    newlines -> spaces; split into sentences at numbered-list markers ("1.") and at full stops;
    each sentence lower-cased and reduced to its runs of word characters (non-ASCII dropped);
    sentences of one word or none are dropped; the rest joined by spaces. A one-word prompt such
    as "atelectasis" therefore becomes empty text, i.e. ``[CLS] [SEP]``, as upstream encodes it."""
    sentences = [s for part in _NUMBERED.split(text.replace("\n", " ")) for s in part.split(".")]
    kept = []
    for sentence in sentences:
        words = _WORD.findall(sentence.replace("\ufffd\ufffd", " ").lower())
        if len(words) <= 1:
            continue
        ascii_words = [a for a in (w.encode("ascii", "ignore").decode("ascii") for w in words) if a]
        kept.append(" ".join(ascii_words))
    return " ".join(kept)


class ImageEncoder(nn.Module):
    def __init__(
        self, trunk: nn.Module | None = None, out_dim: int = 768, input_size: int = 299
    ) -> None:
        import torchvision

        super().__init__()
        self.model = trunk if trunk is not None else torchvision.models.resnet50(weights=None)
        self.model.fc = nn.Identity()
        self.global_embedder = nn.Linear(2048, out_dim)
        self.local_embedder = nn.Conv2d(1024, out_dim, kernel_size=1, bias=False)
        self.input_size = input_size  # upstream upsamples every input to 299 inside the tower

    def _layer3(self, x: torch.Tensor) -> torch.Tensor:
        side = self.input_size
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return torch.flatten(m.avgpool(m.layer4(self._layer3(x))), 1)

    def local_global(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's two image embeddings: region features ``[B, 768, 19, 19]`` (layer3 ->
        ``local_embedder``) and the global embedding ``[B, 768]``."""
        m = self.model
        mid = self._layer3(x)
        glob = self.global_embedder(torch.flatten(m.avgpool(m.layer4(mid)), 1))
        return self.local_embedder(mid), glob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_embedder(self.features(x))


class BertEncoder(nn.Module):
    def __init__(self, bert_config) -> None:
        from transformers import BertModel

        super().__init__()
        self.model = BertModel(bert_config)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sum of the last 4 hidden layers per token ``[T, L, H]``."""
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return torch.stack(out.hidden_states[-LAST_N_LAYERS:]).sum(0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.token_states(input_ids, attention_mask)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / input_ids.shape[1]


class GloriaModel(ClipModel):
    def __init__(
        self, spec: ModelSpec, bert_config, tokenizer, vision: ImageEncoder | None = None
    ) -> None:
        super().__init__(spec)
        self.vision = vision if vision is not None else ImageEncoder()
        self.text = BertEncoder(bert_config)
        self._tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        clean = [gloria_text(t) for t in texts]
        return bert_tokens(self._tokenizer, clean, self.spec.text_context, pad_to_max=True)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def word_embeddings(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Upstream's text embeddings for the local similarity: word vectors ``[T, H, L]``
        (word pieces summed into words; position 0 [CLS], then the words, [SEP], zeros), the
        sentence embeddings ``[T, H]`` and upstream's ``cap_lens``. Upstream counts the
        characters of the raw prompt that do not start with "[" (its loop runs over the string),
        not the words, so its local similarity also spans [SEP] and zero word slots; kept as is."""
        dev = self.device
        tok = {k: v.to(dev) for k, v in self.tokenize(list(texts)).items()}
        h = self.text.token_states(tok["input_ids"], tok["attention_mask"])  # [T, L, H]
        words = torch.zeros_like(h)
        for i, ids in enumerate(tok["input_ids"].tolist()):
            pieces = self._tokenizer.convert_ids_to_tokens(ids)
            col = -1
            for pos, piece in enumerate(pieces):
                if piece.startswith("##") and col >= 0:
                    words[i, col] += h[i, pos]
                    continue
                col += 1
                words[i, col] = h[i, pos]
                if piece == "[SEP]":
                    break
        sent = self.text(tok["input_ids"], tok["attention_mask"])
        cap_lens = [sum(not ch.startswith("[") for ch in t) for t in texts]
        return words.transpose(1, 2), sent, cap_lens

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def logit_scale(self) -> float:
        return GLOBAL_TEMPERATURE

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision.features(images)

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"img_encoder.{k}": v for k, v in self.vision.state_dict().items()}
        sd.update({f"text_encoder.{k}": v for k, v in self.text.state_dict().items()})
        return sd


def upstream_to_ours(key: str) -> str:
    for old, new in (("img_encoder.", "vision."), ("text_encoder.", "text.")):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def build_gloria(
    spec: ModelSpec, bert_config, folder: Path | None, vision: ImageEncoder | None = None
) -> GloriaModel:
    model = GloriaModel(spec, bert_config, bert_tokenizer(folder), vision)
    if folder is not None:
        path = Path(folder) / WEIGHTS
        strict_load(
            model,
            read_state_file(path),
            source=str(path),
            strip_prefixes=("gloria.",),
            drop=is_stale_buffer,
            rename=upstream_to_ours,
        )
    return model.eval()


def _build(folder: Path | None) -> GloriaModel:
    return build_gloria(SPEC, default_bert_config(), folder)


# Tiny: the text tower has no projection (embeddings are BERT's hidden size), so the image
# embedders shrink to the tiny BERT's 32; the internal upsampling keeps upstream's 299/224 ratio.
TINY_INPUT = round(_tiny.RESNET_SIZE * 299 / 224)


def _build_tiny(spec: ModelSpec) -> GloriaModel:
    bert = tiny_bert_config()
    vision = ImageEncoder(_tiny.resnet50_trunk(), bert.hidden_size, TINY_INPUT)
    return build_gloria(spec, bert, None, vision)


SPEC = register(
    ModelSpec(
        name="gloria",
        family="gloria",
        build=_build,
        weight_files=(WEIGHTS, "vocab.txt"),
        sha256={WEIGHTS: "", "vocab.txt": ""},
        source="https://stanfordmedicine.box.com/s/j5h7q99f3pfi7enc0dom73m4nsm6yzvh "
        "(chexpert_resnet50.ckpt, then `fairxray convert-gloria`); vocab.txt from "
        "https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT",
        license="Apache-2.0",
        # Longer side 256 + pad (square cache: a resize), centre crop 224, model upsamples to 299.
        image=ImageSpec(224, "pad_square", 256, "bilinear", 3, (0.5,) * 3, (0.5,) * 3, "0-1"),
        embed_dim=768,
        prompt_style="gloria",
        zero_shot="gloria_local_global",
        lora_targets=RESNET_LORA.targets,
        lora=RESNET_LORA,
        notes="global branch for the CLIP interface, local + global for zero-shot; temp3 = 10",
        feature_dim=2048,
        text_context=CONTEXT,
        tiny=TinySpec(
            _build_tiny,
            _tiny.RESNET_SIZE,
            32,
            2048,
            f"torchvision ResNet, one bottleneck per stage, inner width / 4, upsampled to "
            f"{TINY_INPUT}; BERT 2 x 32",
        ),
        random_vocab_note="random build: generated character-level vocabulary, not Bio_ClinicalBERT's",
    )
)
