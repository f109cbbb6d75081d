"""``toy``: a tiny random CLIP-like model for tests and the demo (no download, builds in ms).

Image tower: two strided convs -> global average pool -> linear projection. Text tower: a hashed
word-level tokenizer (deterministic, offline, no vocabulary file) -> embedding -> masked mean ->
linear projection. Seeded, so every build gives the same weights. ``<weights_dir>/toy/`` may hold
``model.safetensors`` (``save_toy``) so the real loading path is exercised too.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import torch
from torch import nn

from fairxray.models.base import ClipModel
from fairxray.models.registry import ImageSpec, LoraSpec, ModelSpec, TinySpec, register
from fairxray.models.weights import read_state_file, strict_load

SEED = 1234
VOCAB = 512  # ids 0 (pad), 1 (start), 2 (end) are reserved; words hash into [3, VOCAB)
CONTEXT = 16
WIDTH = 32
# The image tower pools its last feature map to a 2x2 grid rather than globally: the synthetic
# findings differ mainly in *where* they are, and a global average of random conv features loses
# that (a linear probe then sits near chance and the planted age gap disappears). With the 2x2 grid
# a linear probe reaches about 0.8 accuracy on the demo split with a clear young/old gap.
GRID = 2
FEATURES = WIDTH * GRID * GRID
EMBED = FEATURES
WEIGHTS_FILE = "model.safetensors"


def toy_tokenize(texts: list[str], context: int = CONTEXT) -> dict[str, torch.Tensor]:
    """Lower-cased words, each hashed (crc32) into the vocabulary; start/end tokens; padded."""
    ids = torch.zeros(len(texts), context, dtype=torch.long)
    mask = torch.zeros(len(texts), context, dtype=torch.long)
    for i, t in enumerate(texts):
        words = re.findall(r"\w+", t.lower())[: context - 2]
        row = [1] + [3 + zlib.crc32(w.encode()) % (VOCAB - 3) for w in words] + [2]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class ToyVision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, WIDTH, 3, stride=2, padding=1)
        self.act = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(GRID)
        self.proj = nn.Linear(FEATURES, EMBED)
        # Orthogonal, bias-free start: a random rotation keeps the pooled features' geometry, so
        # the frozen embedding is as linearly separable as the features themselves.
        nn.init.orthogonal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x))


class ToyText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU())
        self.proj = nn.Linear(WIDTH, EMBED)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.mlp(self.token_embedding(input_ids))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.proj((h * m).sum(1) / m.sum(1).clamp_min(1.0))


class ToyClip(ClipModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.vision = ToyVision()
        self.text = ToyText()
        # Stored in log space like CLIP; init log(1/0.07) as CLIP does.
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return toy_tokenize(texts, self.spec.text_context)

    def text_forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def text_modules(self) -> list[nn.Module]:
        return [self.text]

    def logit_scale(self) -> float:
        return float(self.log_logit_scale.detach().exp())

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision.features(images)


def save_toy(model: ToyClip, folder: str | Path) -> Path:
    """Write ``model`` as ``<folder>/model.safetensors`` (what the toy loader reads)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _random(spec: ModelSpec) -> ToyClip:
    # A private RNG stream: building never disturbs the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return ToyClip(spec)


def _build(folder: Path | None) -> ToyClip:
    model = _random(SPEC)
    if folder is not None:
        path = Path(folder) / WEIGHTS_FILE
        strict_load(model, read_state_file(path), source=str(path))
    return model.eval()


SPEC = register(
    ModelSpec(
        name="toy",
        family="toy",
        build=_build,
        weight_files=(WEIGHTS_FILE,),
        sha256={WEIGHTS_FILE: ""},
        source="none: random, seeded; `fairxray.models.toy.save_toy` writes the file",
        license="MIT (this project)",
        image=ImageSpec(
            size=32,
            resize="shortest+center_crop",
            pre_size=None,
            interpolation="bilinear",
            in_channels=3,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            value_range="0-1",
        ),
        embed_dim=EMBED,
        prompt_style="template",
        lora_targets=("conv1", "conv2", "proj"),
        lora=LoraSpec(("conv1", "conv2", "proj"), rank=4, scale=1.0, source="toy: every layer"),
        notes="tiny random CLIP-like encoders for tests and the demo; not a real model",
        feature_dim=FEATURES,
        text_context=CONTEXT,
        # Already tiny: model_scale: tiny builds the same toy (its spec says so).
        tiny=TinySpec(lambda spec: _random(spec).eval(), 32, EMBED, FEATURES, "the toy itself"),
        random_vocab_note="hashed word tokenizer, no vocabulary file",
    )
)
