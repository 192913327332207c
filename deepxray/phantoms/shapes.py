"""Outlines of bones and other parts, in millimetres, in a bone's own frame.

A bone's frame has `u` across the bone and `v` along its long axis, from the base (v = 0) to the head (v = length).
Placing a bone in a radiograph is an affine map of these points (see `Placement`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BoneShape:
    """Half-widths (mm) and end shapes of one tubular bone."""

    length: float
    base_half_width: float
    shaft_half_width: float
    head_half_width: float
    head: str = "round"  # "round" (metacarpal head), "condylar" (phalangeal head), "tuft" (distal phalanx)
    base: str = "flat"  # "flat" (metacarpal base), "concave" (phalangeal base facet)

    @property
    def head_height(self) -> float:
        """How far the head's arc reaches past the end of the shaft flare, along the axis."""
        return {"round": 0.85, "condylar": 0.45, "tuft": 0.6}[self.head] * self.head_half_width

    @property
    def facet_depth(self) -> float:
        """How deep a concave base facet dips into the bone at its centre."""
        return 0.22 * self.base_half_width if self.base == "concave" else 0.0


@dataclass(frozen=True)
class Outline:
    """A closed polygon and the index ranges of its two articular ends."""

    points: np.ndarray  # (N, 2) u, v in mm
    head: slice  # points of the head's articular arc, from +u to -u
    base: slice  # points of the base's articular curve, from -u to +u


def _half_width(shape: BoneShape, t: np.ndarray) -> np.ndarray:
    """Half-width along the shaft, t in [0, 1] from the base to where the head arc starts."""
    flare_base = np.clip(1.0 - t / 0.28, 0.0, 1.0) ** 2
    flare_head = np.clip((t - 0.68) / 0.32, 0.0, 1.0) ** 2
    # A slight waist makes the shaft look tubular rather than drawn with a ruler.
    waist = 1.0 - 0.06 * np.sin(np.pi * t)
    shaft = shape.shaft_half_width * waist
    return shaft + (shape.base_half_width - shaft) * flare_base + (shape.head_half_width - shaft) * flare_head


def bone_outline(shape: BoneShape, samples: int = 24) -> Outline:
    """Polygon of a tubular bone (metacarpal, phalanx, long bone), counter-clockwise."""
    shaft_end = shape.length - shape.head_height
    t = np.linspace(0.0, 1.0, samples)
    v_side = t * shaft_end
    hw = _half_width(shape, t)
    right = np.stack([hw, v_side], axis=1)
    left = np.stack([-hw[::-1], v_side[::-1]], axis=1)

    # Head: an arc from +u to -u. Phalangeal heads are bicondylar: a shallow notch between the condyles.
    angles = np.linspace(0.0, np.pi, samples + 1)
    head_u = shape.head_half_width * np.cos(angles)
    head_v = shaft_end + shape.head_height * np.sin(angles) ** (0.8 if shape.head == "round" else 0.6)
    if shape.head == "condylar":
        head_v -= 0.09 * shape.head_half_width * np.exp(-((head_u / (0.25 * shape.head_half_width)) ** 2))
    if shape.head == "tuft":
        head_u *= 1.0 + 0.12 * np.sin(angles)
    head = np.stack([head_u, head_v], axis=1)

    # Base: a concave facet for phalanges, a gently undulating plate for metacarpals; from -u to +u.
    base_u = np.linspace(-shape.base_half_width, shape.base_half_width, samples)
    if shape.base == "concave":
        base_v = shape.facet_depth * (1.0 - (base_u / shape.base_half_width) ** 2)
    else:
        base_v = 0.6 * np.sin(base_u / shape.base_half_width * np.pi * 1.5) * 0.3
    base = np.stack([base_u, base_v], axis=1)

    points = np.concatenate([right[1:], head[1:-1], left[:-1], base])
    n_right = len(right) - 1
    n_head = len(head) - 2
    n_left = len(left) - 1
    return Outline(
        points=points,
        head=slice(n_right, n_right + n_head),
        base=slice(n_right + n_head + n_left, len(points)),
    )


def ellipse_outline(center: tuple[float, float], axes: tuple[float, float], angle_deg: float, samples: int = 48):
    """Polygon of an ellipse (carpals, tarsals, patella), in the frame the centre is given in."""
    theta = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
    pts = np.stack([axes[0] * np.cos(theta), axes[1] * np.sin(theta)], axis=1)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.asarray(center)


def band_outline(curve: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Polygon around a polyline (ribs, clavicles), `half_width` per curve point or constant."""
    curve = np.asarray(curve, dtype=np.float64)
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    hw = np.broadcast_to(np.asarray(half_width, dtype=np.float64), (len(curve),))[:, None]
    return np.concatenate([curve + normal * hw, (curve - normal * hw)[::-1]])


@dataclass(frozen=True)
class Placement:
    """Where a bone lies: its base centre and the direction of its axis, in the parent frame (mm)."""

    origin: np.ndarray  # (2,)
    angle: float  # radians; 0 = along +y, positive towards +x

    @property
    def axis(self) -> np.ndarray:
        return np.array([np.sin(self.angle), np.cos(self.angle)])

    @property
    def across(self) -> np.ndarray:
        return np.array([np.cos(self.angle), -np.sin(self.angle)])

    def apply(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return self.origin + uv[..., :1] * self.across + uv[..., 1:2] * self.axis

    def point(self, v: float) -> np.ndarray:
        """The point at distance `v` along the axis."""
        return self.origin + v * self.axis


@dataclass(frozen=True)
class ImageTransform:
    """Maps the anatomical frame (mm, y up) onto image pixels (x right, y down)."""

    matrix: np.ndarray  # (2, 3)

    @classmethod
    def make(
        cls,
        mm_per_px: float,
        scale: float,
        rotation_deg: float,
        anchor_px: tuple[float, float],
        mirror: bool = False,
    ) -> ImageTransform:
        a = np.deg2rad(rotation_deg)
        k = scale / mm_per_px
        flip = np.diag([-1.0 if mirror else 1.0, -1.0])  # y up in mm, y down in pixels
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        linear = k * rot @ flip
        return cls(np.concatenate([linear, np.asarray(anchor_px, dtype=np.float64)[:, None]], axis=1))

    @property
    def px_per_mm(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    def shifted(self, dx: float, dy: float) -> ImageTransform:
        m = self.matrix.copy()
        m[:, 2] += (dx, dy)
        return ImageTransform(m)
