"""A deterministic detector for Shapes-world images, robust to what generators produce.

GenEval detects objects with Mask2Former and names colours with CLIP; neither can be
downloaded here, and neither knows our world. This detector knows it exactly:

1. *Unmixing.* Every pixel p is explained as p = bg + alpha * (c_k - bg) for the palette
   colour c_k with the smallest residual. Blending with the background (anti-aliasing, blur)
   changes alpha, not the colour label, so a blurred red edge is not mistaken for pink.
2. *Segmentation.* Pixels with alpha > 0.5 form connected components; a component in which
   two colours each hold a large share is split by colour (touching objects).
3. *Shape.* Each class is rendered to explain the component's alpha map (size from the painted
   mass, position from the centroid, a few rotations and blurs); the best least-squares fit
   wins and its quality is the detection's confidence.
4. *Size* from the side the mass implies for that shape, split at the midpoint of the two sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..errors import LLMDiffError
from ..shapes.world import COLORS, SHAPES, SIZE_FRACTION, inside_shape

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.asarray(list(COLORS.values()), np.float32) / 255  # (K, 3)
SIZE_SPLIT = (SIZE_FRACTION["small"] + SIZE_FRACTION["large"]) / 2
DEFAULT_THRESHOLD = 0.5  # minimum shape-fit quality for a detection to count (GenEval's detector uses 0.3)


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    size: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    confidence: float  # quality of the best shape fit, in [0, 1]
    area: int

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_background(image: np.ndarray) -> np.ndarray:
    """The background colour as the median of the image's one-pixel frame (objects rarely touch it)."""
    frame = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(frame, axis=0)


def unmix(image: np.ndarray, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel palette label (H, W) and coverage alpha (H, W) for a float RGB image in [0, 1].

    The background is estimated from the image unless given: generators and colour shifts
    rarely keep it at the exact rendered value.
    """
    bg = estimate_background(image) if background is None else background
    d = image - bg  # (H, W, 3)
    directions = _PALETTE - bg  # (K, 3)
    alpha = np.clip(d @ directions.T / (directions**2).sum(-1), 0.0, 1.25)  # (H, W, K)
    residual = np.linalg.norm(d[..., None, :] - alpha[..., None] * directions, axis=-1)  # (H, W, K)
    label = residual.argmin(-1)
    return label, np.take_along_axis(alpha, label[..., None], -1)[..., 0]


# Shape geometry in the unit box: area fraction, and the height of the area centroid.
_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}
_CENTROID_Y = {"circle": 0.5, "square": 0.5, "triangle": 2 / 3, "cross": 0.5}
_ANGLES = np.deg2rad([-7.0, 0.0, 7.0])
_BLURS = (0.5, 0.9, 1.3)  # pixels at 32 px, in proportion above
_SUPERSAMPLE = 2


def _coverage(shape: str, cx: float, cy: float, side: float, h: int, w: int) -> np.ndarray:
    """Coverage (n_angles, h, w) of a shape of `side` pixels with its area centroid at (cx, cy)."""
    ss = _SUPERSAMPLE
    yy, xx = np.meshgrid((np.arange(h * ss) + 0.5) / ss - cy, (np.arange(w * ss) + 0.5) / ss - cx, indexing="ij")
    cos, sin = np.cos(_ANGLES)[:, None, None], np.sin(_ANGLES)[:, None, None]
    u = (cos * xx + sin * yy) / side + 0.5
    v = (-sin * xx + cos * yy) / side + _CENTROID_Y[shape]
    inside = inside_shape(shape, u, v).astype(np.float32)
    return inside.reshape(len(_ANGLES), h, ss, w, ss).mean(axis=(2, 4))


def classify_shape(alpha: np.ndarray, scale: float = 1.0) -> tuple[str, float]:
    """The shape whose rendering best explains an object's alpha map, and the fit quality in [0, 1].

    For each class, the side follows from the painted mass (mass = fill x side^2, which blur
    preserves) and the position from the centroid; rotation (+-7 degrees) and blur are searched.
    Least squares over every pixel uses all the evidence, where thresholding a noisy 8-pixel
    object would move its box by a pixel. Confidence = 1 - residual / signal energy.
    """
    ys, xs = np.nonzero(alpha > 0)
    y0, x0 = max(ys.min() - 3, 0), max(xs.min() - 3, 0)
    a = alpha[y0 : ys.max() + 4, x0 : xs.max() + 4].astype(np.float32)
    h, w = a.shape
    mass = float(a.sum())
    yy, xx = np.indices(a.shape)
    cy, cx = float((a * (yy + 0.5)).sum() / mass), float((a * (xx + 0.5)).sum() / mass)
    errors = {}
    for shape in SHAPES:
        cov = _coverage(shape, cx, cy, np.sqrt(mass / _FILL[shape]), h, w)
        errors[shape] = min(
            float(((ndimage.gaussian_filter(cov, (0, b * scale, b * scale)) - a) ** 2).sum(axis=(1, 2)).min())
            for b in _BLURS
        )
    best = min(errors, key=errors.get)
    return best, max(0.0, 1.0 - errors[best] / float((a**2).sum()))


def detect(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD, min_area_fraction: float = 0.01) -> list[Detection]:
    """Objects in an (H, W, 3) uint8 image, most confident first."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise LLMDiffError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    h, w, _ = image.shape
    img = image.astype(np.float32) / 255
    sigma = 0.5 * min(h, w) / 32  # light denoising, in proportion to the resolution
    img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    label, alpha = unmix(img)
    fg = alpha > 0.5
    min_area = max(4, int(min_area_fraction * h * w))
    blobs, _ = ndimage.label(fg)  # 4-connectivity: diagonal contact does not merge objects
    detections = []
    for blob_id, region in enumerate(ndimage.find_objects(blobs), 1):
        for idx in _split_by_color(blobs, blob_id, region, label, alpha, min_area):
            ys, xs = idx
            if len(ys) < min_area:
                continue
            colors = np.bincount(label[ys, xs], weights=alpha[ys, xs], minlength=len(_PALETTE_NAMES))
            color = int(colors.argmax())
            soft = _with_fringe(label, alpha, ys, xs, color)
            shape, conf = classify_shape(soft, scale=min(h, w) / 32)
            if conf < threshold:
                continue
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            side = np.sqrt(soft.sum() / _FILL[shape])  # blur moves mass to the fringe but keeps it
            size = "large" if side / min(h, w) > SIZE_SPLIT else "small"
            detections.append(
                Detection(shape, _PALETTE_NAMES[color], size, (x0, y0, x1, y1), round(conf, 4), len(ys))
            )
    return sorted(detections, key=lambda d: -d.confidence)



def _with_fringe(label, alpha, ys, xs, color: int) -> np.ndarray:
    """The object's alpha map: its pixels plus a 2-pixel fringe of the same colour."""
    mask = np.zeros(label.shape, bool)
    mask[ys, xs] = True
    mask |= ndimage.binary_dilation(mask, iterations=2) & (label == color)
    return np.where(mask, alpha, 0.0).astype(np.float32)


def _split_by_color(blobs, blob_id, region, label, alpha, min_area, share: float = 0.3):
    """Pixel indices of the objects in one connected blob: one object, or one per dominant colour."""
    ys, xs = np.nonzero(blobs[region] == blob_id)
    ys, xs = ys + region[0].start, xs + region[1].start
    labels = label[ys, xs]
    votes = np.bincount(labels, weights=alpha[ys, xs], minlength=len(_PALETTE_NAMES))
    dominant = [k for k in np.nonzero(votes >= share * votes.sum())[0] if (labels == k).sum() >= min_area]
    if len(dominant) <= 1:
        return [(ys, xs)]
    parts = []
    for k in dominant:  # touching objects of different colours: one part per colour region
        mask = np.zeros(blobs.shape, bool)
        mask[ys[labels == k], xs[labels == k]] = True
        sub, m = ndimage.label(mask)
        parts.extend(np.nonzero(sub == j) for j in range(1, m + 1))
    return parts
