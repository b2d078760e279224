"""The Shapes world: vocabulary, scene specifications and a fast deterministic renderer.

A *scene specification* is what a caption says (which objects, which attributes, which
relations); a *scene* is one rendering of it, with the exact scene graph (class, colour,
size, bounding box, centre) of every object. Training reuses one specification (and so
one cached caption encoding) for many random renderings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import LLMDiffError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# A subset of GenEval's ten colour names, with RGB values far apart from each other and from
# the background so that colour survives blur, noise and the blending at object edges.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (235, 215, 0),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "purple": (135, 40, 185),
    "pink": (245, 90, 180),
    "brown": (115, 65, 20),
}
SIZES: tuple[str, ...] = ("small", "large")
# Object side as a fraction of the image side; detection splits sizes at the midpoint.
SIZE_FRACTION: dict[str, float] = {"small": 0.25, "large": 0.375}
BACKGROUND: tuple[int, int, int] = (245, 245, 245)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
MAX_OBJECTS = 5
# GenEval's margin: centres must differ by more than 0.1 x the summed box sizes.
POSITION_THRESHOLD = 0.1


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a caption describes it; None means the caption leaves it open."""

    shape: str
    color: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class SceneSpec:
    """What a caption asks for: objects and relations (i, relation, j) = "object i is <relation> object j"."""

    objects: tuple[ObjectSpec, ...]
    relations: tuple[tuple[int, str, int], ...] = ()

    def to_dict(self) -> dict:
        return {
            "objects": [asdict(o) for o in self.objects],
            "relations": [list(r) for r in self.relations],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SceneSpec":
        try:
            return cls(
                objects=tuple(ObjectSpec(**o) for o in d["objects"]),
                relations=tuple((int(i), str(rel), int(j)) for i, rel, j in d.get("relations", [])),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, LLMDiffError):
                raise
            raise LLMDiffError(f"not a scene ({type(e).__name__}: {e}): {str(d)[:120]}") from None


@dataclass(frozen=True)
class SceneObject:
    """One rendered object. bbox is (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    shape: str
    color: str
    size: str
    bbox: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject] = field(default_factory=list)


def object_side(size: str, resolution: int) -> int:
    return max(4, int(round(SIZE_FRACTION[size] * resolution)))


def inside_shape(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (x, y) in the shape's unit box [0, 1]^2 (y down) lie inside the shape."""
    if shape == "circle":
        return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    if shape == "square":
        return (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    if shape == "triangle":  # apex up, base along the bottom edge
        return (np.abs(x - 0.5) <= 0.5 * y) & (y <= 1)
    if shape == "cross":  # a plus sign with arms one third wide
        box = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
        return box & ((np.abs(x - 0.5) <= 1 / 6) | (np.abs(y - 0.5) <= 1 / 6))
    raise LLMDiffError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


@lru_cache(maxsize=None)
def shape_alpha(shape: str, side: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage mask (side, side) in [0, 1] for one shape, by supersampling."""
    n = side * supersample
    c = (np.arange(n) + 0.5) / n  # sample centres in [0, 1]
    x, y = np.meshgrid(c, c)
    a = inside_shape(shape, x, y).reshape(side, supersample, side, supersample).mean(axis=(1, 3))
    a.setflags(write=False)
    return a


def relative_position(box_a, box_b, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """Relations of box A to box B, exactly as GenEval computes them (centres with a margin)."""
    # Plain floats rather than numpy: the renderer calls this in its rejection loop.
    ax0, ay0, ax1, ay1 = (float(v) for v in box_a[:4])
    bx0, by0, bx1, by1 = (float(v) for v in box_b[:4])
    ox, oy = (ax0 + ax1 - bx0 - bx1) / 2, (ay0 + ay1 - by0 - by1) / 2  # centre offset A - B
    rx = math.copysign(max(abs(ox) - threshold * (abs(ax1 - ax0) + abs(bx1 - bx0)), 0.0), ox)
    ry = math.copysign(max(abs(oy) - threshold * (abs(ay1 - ay0) + abs(by1 - by0)), 0.0), oy)
    if abs(rx) < 1e-3 and abs(ry) < 1e-3:
        return set()
    norm = math.hypot(ox, oy)
    dx, dy = rx / norm, ry / norm
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


class RenderError(LLMDiffError):
    """A scene specification that cannot be drawn."""


def validate_spec(spec: SceneSpec) -> None:
    if not 1 <= len(spec.objects) <= MAX_OBJECTS:
        raise RenderError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(spec.objects)}")
    for o in spec.objects:
        if o.shape not in SHAPES:
            raise RenderError(f"unknown shape {o.shape!r}; known: {', '.join(SHAPES)}")
        if o.color is not None and o.color not in COLORS:
            raise RenderError(f"unknown colour {o.color!r}; known: {', '.join(COLORS)}")
        if o.size is not None and o.size not in SIZES:
            raise RenderError(f"unknown size {o.size!r}; known: {', '.join(SIZES)}")
    for i, rel, j in spec.relations:
        if rel not in RELATIONS or not (0 <= i < len(spec.objects)) or not (0 <= j < len(spec.objects)) or i == j:
            raise RenderError(f"bad relation {(i, rel, j)!r}")


def _free_corners(sides: list[int], rng: np.random.Generator, resolution: int, gap: int) -> list | None:
    """Uniform placement: 64 candidate corners per object, keep the first that clears every placed box.

    Objects keep `gap` pixels from each other and from the image border.
    """
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        # Plain Python over the candidates: the first one usually fits, and numpy's per-call overhead
        # on 64-element arrays cost more than the whole scene's drawing.
        for x0, y0 in rng.integers(gap, resolution - side - gap + 1, size=(64, 2)).tolist():
            if all(x0 >= b[2] + gap or b[0] >= x0 + side + gap or y0 >= b[3] + gap or b[1] >= y0 + side + gap
                   for b in boxes):
                boxes.append((x0, y0, x0 + side, y0 + side))
                break
        else:
            return None
    return boxes


def _grid_corners(sides: list[int], rng: np.random.Generator, resolution: int, gap: int) -> list | None:
    """Crowded scenes: one object per cell of a random grid, jittered inside its cell."""
    n, usable, big = len(sides), resolution - 2 * gap, max(sides)
    grids = [(r, c) for r in range(1, n + 1) for c in range(1, n + 1)
             if r * c >= n and usable / c >= big + gap / 2 and usable / r >= big + gap / 2]
    if not grids:
        return None
    rows, cols = grids[int(rng.integers(len(grids)))]
    boxes = []
    for side, cell in zip(sides, rng.permutation(rows * cols)[:n]):
        r, c = divmod(int(cell), cols)
        x_lo, x_hi = gap + c * usable // cols, gap + (c + 1) * usable // cols - side
        y_lo, y_hi = gap + r * usable // rows, gap + (r + 1) * usable // rows - side
        x0, y0 = int(rng.integers(x_lo, max(x_lo, x_hi) + 1)), int(rng.integers(y_lo, max(y_lo, y_hi) + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if any(not (box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap)
               for b in boxes):
            return None
        boxes.append(box)
    return boxes


def _layout(spec: SceneSpec, rng: np.random.Generator, resolution: int, gap: int, tries: int):
    """Rejection-sample non-overlapping boxes that satisfy every relation unambiguously.

    Uniform placement first; crowded scenes that rarely fit that way fall back to a jittered grid.
    """
    n = len(spec.objects)
    for attempt in range(tries):
        sizes = [o.size or (SIZES[rng.integers(2)] if n < 5 else "small") for o in spec.objects]
        sides = [object_side(s, resolution) for s in sizes]
        place = _free_corners if attempt < 4 or attempt % 2 else _grid_corners
        boxes = place(sides, rng, resolution, gap)
        # The intended relation must be the only one GenEval reads (no diagonal ambiguity).
        if boxes and all(relative_position(boxes[i], boxes[j]) == {rel} for i, rel, j in spec.relations):
            return sizes, boxes
    raise RenderError(f"could not lay out {spec} at {resolution}px after {tries} tries")


def render(
    spec: SceneSpec,
    rng: np.random.Generator,
    resolution: int = 32,
    gap: int | None = None,
    tries: int = 2000,
    forbidden: frozenset[tuple[str, str]] = frozenset(),
    warp: float = 0.0,
) -> Scene:
    """Render one scene for a specification.

    Colours and sizes the specification leaves open are drawn at random, never giving a
    (colour, shape) pair in ``forbidden`` (the held-out compositions, for training data).
    ``tries``: layouts drawn before giving up; five small objects with a relation (the dense suite) exhaust 400
    about once in a thousand renders. A render that succeeds draws the same scene whatever ``tries`` is.
    ``warp`` > 0 distorts every object by a small random affine map (rotation, shear, scale
    up to about warp x 30 degrees / warp x 0.3): generated-looking shapes for validation.
    """
    validate_spec(spec)
    if resolution < 16:
        raise RenderError(f"resolution must be at least 16 px, got {resolution}")
    gap = max(2, resolution // 16) if gap is None else gap
    sizes, boxes = _layout(spec, rng, resolution, gap, tries)
    palette = list(COLORS)
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = BACKGROUND
    objects = []
    for o, size, box in zip(spec.objects, sizes, boxes):
        color = o.color
        while color is None or (color, o.shape) in forbidden:
            color = palette[rng.integers(len(palette))]
        x0, y0, x1, y1 = box
        a = shape_alpha(o.shape, x1 - x0)
        if warp > 0:  # warp inside a padded window, then record the distorted object's box
            pad = max(1, (x1 - x0) // 5)
            a = _warped(np.pad(a, pad), rng, warp)
            x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
            cx0, cy0 = max(x0, 0), max(y0, 0)
            a = a[cy0 - y0 : a.shape[0] - max(y1 - resolution, 0), cx0 - x0 : a.shape[1] - max(x1 - resolution, 0)]
            x0, y0 = cx0, cy0
            ys, xs = np.nonzero(a > 0.5)
            box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
        region = img[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]]
        region *= 1 - a[..., None]
        region += a[..., None] * np.asarray(COLORS[color], dtype=np.float32)
        objects.append(SceneObject(o.shape, color, size, box))
    return Scene(np.round(img).astype(np.uint8), objects)


def _warped(alpha: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The mask under a random affine map about its centre, clipped to its own box."""
    from scipy import ndimage

    angle = rng.uniform(-1, 1) * strength * math.pi / 6
    shear = rng.uniform(-1, 1) * strength * 0.3
    scale = 1 + rng.uniform(-1, 1, size=2) * strength * 0.3
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = rot @ np.array([[1, shear], [0, 1]]) @ np.diag(scale)
    inv = np.linalg.inv(m)
    c = (np.array(alpha.shape) - 1) / 2
    return ndimage.affine_transform(alpha, inv, offset=c - inv @ c, order=1, mode="constant", cval=0.0)
