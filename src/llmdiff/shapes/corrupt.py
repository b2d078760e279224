"""Realistic corruptions of clean renders, to validate the detector on generated-looking images."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def corrupt(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Gaussian blur, colour jitter and Gaussian noise, in proportion to the resolution.

    At strength 1 and 32 px: blur sigma 0.3-0.9 px, per-channel gain 0.9-1.1 and offset
    +-0.04, noise sigma 0.01-0.05 (on a [0, 1] scale). Shape distortion comes from
    ``render(..., warp=...)``, which distorts each object rather than the whole image.
    """
    h = image.shape[0]
    img = image.astype(np.float32) / 255
    sigma = rng.uniform(0.3, 0.9) * strength * h / 32
    img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    img = img * rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength, 3) + rng.uniform(-0.04, 0.04, 3) * strength
    img = img + rng.normal(0, rng.uniform(0.01, 0.05) * strength, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
