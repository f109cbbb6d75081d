"""Shared pieces of the transformers-format families (PubMedCLIP, MedSigLIP, RAD-DINO, BioViL's
text tower): strict offline loading through the class's own ``from_pretrained`` and the CLIP BPE
files.

``from_pretrained`` is the upstream loader: it reads ``config.json`` and ``model.safetensors`` in
the distributed layout and maps the key names of older transformers releases (the hub files of
RAD-DINO use the 4.x Dinov2 names). Loading is offline (``local_files_only``) and strict: any
missing, unexpected or mis-shaped tensor is an error, never a silent random init.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path

import torch
from torch import nn

from fairxray.errors import UserError


def strict_from_pretrained(cls, folder: Path, **kw):
    """``cls.from_pretrained(folder)`` offline, with every loading problem an error."""
    prev = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its own report is replaced below
    try:
        model, info = cls.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True, **kw
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{folder}: not a loadable {cls.__name__} checkpoint ({first})") from None
    finally:
        logging.getLogger("transformers").setLevel(prev)
    bad = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if bad:
        parts = [f"{len(v)} {k.replace('_', ' ')} (e.g. {v[:3]})" for k, v in bad.items()]
        raise UserError(f"{folder}: checkpoint does not match {cls.__name__}: {'; '.join(parts)}")
    return model.eval()


def pooled(out) -> torch.Tensor:
    """transformers 5 ``get_*_features`` return an output object; 4.x returned the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@cache
def clip_bpe_dir() -> Path:
    """``vocab.json`` + ``merges.txt`` of OpenAI's CLIP BPE, written from the copy inside the
    open_clip wheel (the same 49,408-token vocabulary the hub's CLIP tokenizers ship), so random
    builds tokenize exactly as real CLIP-format checkpoints do, offline."""
    import tempfile

    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder = Path(tempfile.mkdtemp(prefix="fairxray-clip-bpe-"))
    # open_clip names the two special tokens differently; ids 49406/49407 are the same.
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    )
    return folder


def hf_clip_tokenizer(folder: Path | None, context: int):
    """The CLIP BPE tokenizer of a transformers folder (``vocab.json``, ``merges.txt``)."""
    from transformers import CLIPTokenizer

    src = folder if folder is not None else clip_bpe_dir()
    tok = CLIPTokenizer.from_pretrained(str(src), local_files_only=True)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tok(
            texts, padding="max_length", truncation=True, max_length=context, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return tokenize


class Projected(nn.Module):
    """A transformers tower plus its projection: ``proj(tower(x).pooler_output)``; keeps the
    upstream attribute names (``vision_model``, ``visual_projection``...) for LoRA targets."""

    def __init__(self, names: tuple[str, str | None], tower: nn.Module, proj: nn.Module | None):
        super().__init__()
        self._names = names
        setattr(self, names[0], tower)
        if names[1] is not None:
            setattr(self, names[1], proj)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        z = getattr(self, self._names[0])(*args, **kwargs).pooler_output
        return z if self._names[1] is None else getattr(self, self._names[1])(z)
