"""Cached uint8 grayscale pixels -> a model's input tensor, batched and on the pixels' device.

The upstream pipelines resize 8-bit PIL images, so we resize on the 0-255 scale with antialiasing
(torchvision's PIL-matching tensor path) and round back to integers before scaling; this keeps the
result within one grey level of PIL. The cache holds square images at the largest size any model
needs, so the resize rules mostly reduce to one resize (plus a crop when ``pre_size`` is set); the
general rules still hold for non-square input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fairxray.models.spec import ImageSpec


def _resize(x: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    if mode == "bicubic" and (h > x.shape[-2] or w > x.shape[-1]):
        # Upsampling: PIL resizes an 8-bit image in two passes (width, then height) and stores
        # the intermediate as 8-bit, so bicubic overshoot at edges is clamped in between. Do the
        # same; downsampling (every model on a larger cache) is unchanged.
        x = F.interpolate(x, size=(x.shape[-2], w), mode=mode, align_corners=False, antialias=True)
        x = x.round_().clamp_(0.0, 255.0)
        return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)


def _shortest(x: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """Shorter side -> ``side``, aspect kept (torchvision ``Resize(int)`` rounding: floor)."""
    h, w = x.shape[-2:]
    if h <= w:
        return _resize(x, side, int(side * w / h), mode)
    return _resize(x, int(side * h / w), side, mode)


def _center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    # Same offsets as torchvision's CenterCrop: round((H - side) / 2).
    h, w = x.shape[-2:]
    top = int(round((h - side) / 2.0))
    left = int(round((w - side) / 2.0))
    return x[..., top : top + side, left : left + side]


def _pad_square(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad (black) to a square, image centred."""
    h, w = x.shape[-2:]
    s = max(h, w)
    if h == w:
        return x
    top, left = (s - h) // 2, (s - w) // 2
    return F.pad(x, (left, s - w - left, top, s - h - top), value=0.0)


def preprocess_pixels(pixels: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """uint8 ``[B, H, W]`` (or ``[H, W]``) -> float32 ``[B, C, S, S]`` per ``spec``.

    Steps: resize rule on the 0-255 scale (rounded, clamped, as an 8-bit image would be) ->
    optional centre crop from ``pre_size`` to ``size`` -> value range -> channels repeated to
    ``in_channels`` -> ``(x - mean) / std`` per channel.
    """
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3:
        raise ValueError(f"expected [B, H, W] pixels, got shape {tuple(pixels.shape)}")
    x = pixels[:, None].float()
    first = spec.pre_size or spec.size
    mode = spec.interpolation
    if spec.resize == "stretch":
        x = _resize(x, first, first, mode)
    elif spec.resize == "shortest+center_crop":
        x = _center_crop(_shortest(x, first, mode), first)
    else:  # pad_square
        x = _resize(_pad_square(x), first, first, mode)
    x = x.round_().clamp_(0.0, 255.0)
    if first != spec.size:
        x = _center_crop(x, spec.size)
    if spec.value_range == "0-1":
        x = x / 255.0
    x = x.expand(-1, spec.in_channels, -1, -1)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()
