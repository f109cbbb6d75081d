"""The paper's training augmentation as batched tensor ops on uint8 pixels, on their device.

The paper (torchvision on PIL images, per image): RandomVerticalFlip(0.3), RandomHorizontalFlip(0.3),
RandomRotation(15), ColorJitter(0.2, 0.2, 0.2). Here, per image of a batch: horizontal and vertical
flips each with ``flip_p``; a rotation by an angle uniform in ``[-rotation_deg, rotation_deg]``
about the centre (bilinear, black corners, as RandomRotation fills 0); brightness then contrast
factors uniform in ``[1 - jitter, 1 + jitter]`` (contrast blends with the image's mean grey, as
torchvision does). Saturation is a no-op on grayscale and is left out. The output is uint8 again,
because each model's own preprocessing starts from 8-bit pixels.

All random numbers come from one CPU ``torch.Generator`` (five per image, drawn whether or not an
op is enabled), so a run is reproducible and resumable from the generator's state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fairxray.config import AugmentParams

DRAWS_PER_IMAGE = 5


def augment_draws(n: int, generator: torch.Generator) -> torch.Tensor:
    """The random numbers of ``n`` images, ``[n, DRAWS_PER_IMAGE]`` uniform on CPU."""
    return torch.rand(n, DRAWS_PER_IMAGE, generator=generator)


def augment(
    pixels: torch.Tensor,
    aug: AugmentParams,
    generator: torch.Generator | None = None,
    *,
    draws: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 ``[B, H, W]`` -> augmented uint8 ``[B, H, W]`` on the same device.

    Randomness: ``draws`` (from :func:`augment_draws`, ideally already on the device: the
    trainer moves a whole epoch's draws once, so no batch waits on a host-to-device copy), or
    fresh draws from ``generator``."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 3:
        raise ValueError(
            f"augment expects uint8 [B, H, W], got {pixels.dtype} {tuple(pixels.shape)}"
        )
    b = pixels.shape[0]
    if draws is None:
        if generator is None:
            raise ValueError("augment needs a generator or draws")
        draws = augment_draws(b, generator)
    if draws.shape != (b, DRAWS_PER_IMAGE):
        raise ValueError(
            f"augment: draws must be [{b}, {DRAWS_PER_IMAGE}], got {tuple(draws.shape)}"
        )
    u = draws.to(pixels.device, non_blocking=True)
    if aug.flip_p <= 0 and aug.rotation_deg <= 0 and aug.jitter <= 0:
        return pixels
    x = pixels.float()
    if aug.flip_p > 0:
        h = (u[:, 0] < aug.flip_p).view(b, 1, 1)
        v = (u[:, 1] < aug.flip_p).view(b, 1, 1)
        x = torch.where(h, x.flip(-1), x)
        x = torch.where(v, x.flip(-2), x)
    if aug.rotation_deg > 0:
        x = rotate(x, (u[:, 2] * 2 - 1) * aug.rotation_deg)
    if aug.jitter > 0:
        bright = 1 + (u[:, 3] * 2 - 1) * aug.jitter
        contrast = 1 + (u[:, 4] * 2 - 1) * aug.jitter
        x = (x * bright.view(b, 1, 1)).clamp(0, 255)
        mean = x.mean(dim=(1, 2), keepdim=True)
        x = (x - mean) * contrast.view(b, 1, 1) + mean
    return x.round_().clamp_(0, 255).to(torch.uint8)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate float ``[B, H, W]`` images counter-clockwise by ``degrees`` ``[B]`` about the
    centre; pixels from outside the image are 0."""
    b, h, w = x.shape
    rad = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates in [-1, 1] (y pointing down); the aspect terms
    # keep the rotation rigid on non-square images.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, zero], dim=-1),
            torch.stack([sin * w / h, cos, zero], dim=-1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(
        x[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[:, 0]
