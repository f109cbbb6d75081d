"""Shared pieces of the BERT/Swin families: offline tokenizers and legacy key maps."""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def generated_vocab() -> dict[str, int]:
    """A small character-level WordPiece vocabulary for RANDOM builds only (no real vocabulary
    ships offline): every word splits into single characters, so prompts still differ."""
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    tokens = [*SPECIALS, *chars, *(f"##{c}" for c in chars)]
    return {t: i for i, t in enumerate(tokens)}


def bert_tokenizer(folder: Path | None, lower_case: bool | None = None):
    """The real WordPiece tokenizer from ``<folder>/vocab.txt`` (and tokenizer_config.json when
    present); ``folder=None`` -> the generated vocabulary (random builds)."""
    from transformers import BertTokenizer

    kw = {} if lower_case is None else {"do_lower_case": lower_case}
    if folder is None:
        return BertTokenizer(vocab=generated_vocab(), **kw)
    return BertTokenizer.from_pretrained(str(folder), local_files_only=True, **kw)


def bert_tokens(tokenizer, texts: list[str], max_length: int, pad_to_max: bool = False) -> dict:
    enc = tokenizer(
        texts,
        padding="max_length" if pad_to_max else "longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# transformers 4.x Swin parameter names -> 5.x (5.x renamed query/key/value to q/k/v_proj). Order matters: the attention
# output dense must be renamed before the generic block `output.dense`.
_SWIN_V4_TO_V5 = (
    (".attention.self.query.", ".attention.q_proj."),
    (".attention.self.key.", ".attention.k_proj."),
    (".attention.self.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (
        ".attention.self.relative_position_bias_table",
        ".attention.relative_position_bias.relative_position_bias_table",
    ),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)


def swin_v4_to_v5(key: str) -> str:
    if ".blocks." not in key:
        return key
    for old, new in _SWIN_V4_TO_V5:
        if old in key:
            return key.replace(old, new)
    return key


def swin_v5_to_v4(key: str) -> str:
    """Inverse map, used by tests to write checkpoints in the 4.x layout upstream shipped."""
    if ".blocks." not in key:
        return key
    for old, new in _SWIN_V4_TO_V5:
        if new in key:
            return key.replace(new, old)
    return key


def swin_relative_position_index(window: int) -> torch.Tensor:
    """The buffer Swin 4.x saved in every block (recomputed, so 4.x-layout files are complete)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


_STALE = re.compile(r"(^|\.)(embeddings\.position_ids|relative_position_index)$")


def is_stale_buffer(key: str) -> bool:
    """Buffers older transformers saved and current ones rebuild (BERT position_ids, Swin
    relative_position_index): dropped before the strict load."""
    return bool(_STALE.search(key))
