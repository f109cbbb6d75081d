"""Adaptation methods (zero_shot, linear_probe, mlp, lora, full_ft), heads and LoRA wrapping."""

from fairxray.adapt.registry import (
    HeadClassifier,
    ImageClassifier,
    Method,
    build,
    check_grid,
    count_trainable,
    get_method,
    list_methods,
)

__all__ = [
    "HeadClassifier",
    "ImageClassifier",
    "Method",
    "build",
    "check_grid",
    "count_trainable",
    "get_method",
    "list_methods",
]
