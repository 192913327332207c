"""A hand radiograph in PA view: skeleton, soft tissue, erosions, and the labels that go with them.

Lengths follow the adult figures in `shared/docs/hand-radiographs.md` (Buryanov & Kotiuk 2010), varied per hand.
The anatomical frame is in millimetres with y towards the fingers and x towards the thumb of a left hand, so a
left hand PA shows its thumb on the image's right; a right hand is drawn as its own hand and mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from deepxray.labels import JOINT_NAMES, RATINGEN_BANDS
from deepxray.phantoms import render
from deepxray.phantoms.shapes import (
    BoneShape,
    ImageTransform,
    Outline,
    Placement,
    bone_outline,
    ellipse_outline,
)

# Per ray (thumb, index, middle, ring, little): metacarpal base (mm), axis angle (deg), and bone shapes as
# (length, base, shaft, head half-widths).
METACARPAL_BASES = ((19.0, 14.0), (11.0, 30.0), (1.5, 31.0), (-8.0, 29.0), (-16.5, 26.0))
METACARPAL_ANGLES = (40.0, 9.0, 1.0, -6.0, -13.0)
METACARPALS = ((46.2, 7.0, 4.3, 7.2), (68.1, 6.5, 4.0, 7.0), (64.6, 6.5, 4.0, 7.0), (58.0, 5.8, 3.6, 6.5),
               (53.7, 5.8, 3.4, 6.0))  # fmt: skip
PROXIMAL = ((31.6, 7.0, 4.3, 5.8), (39.8, 6.2, 3.7, 4.8), (44.6, 6.4, 3.9, 5.0), (41.4, 6.0, 3.6, 4.7),
            (32.6, 5.2, 3.1, 4.0))  # fmt: skip
MIDDLE = (None, (22.4, 5.0, 3.1, 4.0), (26.3, 5.2, 3.3, 4.2), (25.7, 5.0, 3.1, 4.0), (18.1, 4.2, 2.7, 3.4))
DISTAL = ((21.7, 5.6, 3.2, 3.8), (15.8, 4.2, 2.4, 3.0), (17.4, 4.4, 2.5, 3.1), (17.3, 4.2, 2.4, 3.0),
          (16.0, 3.6, 2.1, 2.7))  # fmt: skip
# How far each finger's phalanges turn away from its metacarpal when the fingers are spread (deg).
SPREAD_DEG = (0.0, 7.0, 1.0, -5.0, -11.0)
CARPALS = (  # centre (mm), semi-axes (mm), angle (deg)
    ((14.0, 10.0), (5.0, 8.5), 50.0),  # scaphoid
    ((2.0, 7.0), (5.5, 5.0), 0.0),  # lunate
    ((-8.0, 10.0), (4.5, 5.0), 20.0),  # triquetrum
    ((-10.0, 13.0), (3.5, 3.5), 0.0),  # pisiform
    ((19.0, 21.0), (5.5, 5.0), 30.0),  # trapezium
    ((11.0, 23.0), (4.5, 4.5), 0.0),  # trapezoid
    ((2.0, 19.0), (5.0, 8.5), 0.0),  # capitate
    ((-8.0, 20.0), (5.5, 7.5), -10.0),  # hamate
)
# Destroyed-stretch depth for each Ratingen class (mm): deeper with the grade, so damage grows with the score.
EROSION_DEPTH_MM = {1: 1.2, 2: 1.5, 3: 1.8, 4: 2.2, 5: 2.7}
# Radiographic joint spaces (mm): MCP about 1.4, PIP about 1.0, DIP about 0.7.
GAP_MM = {"mcp": (1.1, 1.8), "pip": (0.8, 1.3), "dip": (0.55, 0.9)}


@dataclass
class Bone:
    name: str
    shape: BoneShape
    placement: Placement
    outline: Outline

    def points_mm(self, part: slice | None = None) -> np.ndarray:
        pts = self.outline.points if part is None else self.outline.points[part]
        return self.placement.apply(pts)


@dataclass
class Joint:
    """One scored joint: the head of `proximal` facing the base of `distal` across a joint space."""

    name: str
    proximal: Bone
    distal: Bone
    center_mm: np.ndarray
    gap_mm: float


@dataclass
class HandPhantom:
    """A rendered hand and everything known about it."""

    image: np.ndarray  # uint16, 12-bit values, bone bright
    laterality: str  # "L" or "R"
    scores: dict[str, int]
    destroyed_share: dict[str, float]
    centers: dict[str, tuple[float, float]]  # joint centres in pixels
    bones_px: dict[str, np.ndarray] = field(repr=False)  # bone outlines in pixels
    joint_axes: dict[str, tuple[float, float]] = field(repr=False)  # unit vector proximal -> distal, pixels
    joint_bones: dict[str, tuple[str, str]] = field(repr=False)  # (proximal bone, distal bone) of each joint
    gaps_px: dict[str, float] = field(repr=False)
    px_per_mm: float = 0.0
    ring: bool = False
    marker: str | None = None


def _shape(spec, k: np.ndarray, head: str, base: str) -> BoneShape:
    length, b, s, h = spec
    width = k[1]
    return BoneShape(length * k[0], b * width, s * width, h * width, head=head, base=base)


def build_skeleton(rng: np.random.Generator) -> tuple[list[Bone], dict[str, Joint]]:
    """Draw one hand's skeleton: bone proportions, finger spread and joint spaces vary per hand."""
    bones: list[Bone] = []
    joints: dict[str, Joint] = {}
    spread = rng.uniform(0.0, 1.0)
    thumb_abduction = rng.uniform(-8.0, 10.0)

    def proportions() -> np.ndarray:
        return np.array([rng.uniform(0.95, 1.05), rng.uniform(0.92, 1.08)])

    hand_width = rng.uniform(0.93, 1.07)
    for ray in range(5):
        k_ray = proportions()
        base = np.array(METACARPAL_BASES[ray]) * (hand_width, 1.0) + rng.normal(0.0, 0.6, size=2)
        angle = METACARPAL_ANGLES[ray] + (thumb_abduction if ray == 0 else rng.normal(0.0, 1.5))
        meta = _bone(f"metacarpal{ray + 1}", _shape(METACARPALS[ray], k_ray, "round", "flat"), base, angle)
        bones.append(meta)

        chain = [meta]
        finger_angle = angle + (rng.uniform(-16.0, 2.0) if ray == 0 else spread * SPREAD_DEG[ray])
        segments = [PROXIMAL[ray], MIDDLE[ray], DISTAL[ray]] if ray else [PROXIMAL[ray], DISTAL[ray]]
        names = ["proximal", "middle", "distal"] if ray else ["proximal", "distal"]
        for i, (spec, name) in enumerate(zip(segments, names, strict=True)):
            prev = chain[-1]
            # The thumb's IP joint (its second joint) is scored as PIP1.
            kind = ("mcp", "pip", "dip")[i]
            gap = rng.uniform(*GAP_MM[kind])
            finger_angle += rng.normal(0.0, 2.0) if i else 0.0
            head = "tuft" if name == "distal" else "condylar"
            shape = _shape(spec, k_ray * (1.0, rng.uniform(0.97, 1.03)), head, "concave")
            apex = prev.placement.point(prev.shape.length)
            axis = Placement(np.zeros(2), np.deg2rad(finger_angle)).axis
            origin = apex + (gap - shape.facet_depth) * axis
            bone = _bone(f"{name}{ray + 1}", shape, origin, finger_angle)
            bones.append(bone)
            if kind in ("mcp", "pip"):
                joint_name = f"{kind}{ray + 1}"
                joints[joint_name] = Joint(joint_name, prev, bone, apex + 0.5 * gap * axis, gap)
            chain.append(bone)

    for i, (center, axes, angle) in enumerate(CARPALS):
        pts = ellipse_outline(
            np.array(center) * (hand_width, 1.0) + rng.normal(0.0, 0.5, 2),
            tuple(np.array(axes) * rng.uniform(0.92, 1.08, 2)),
            angle + rng.normal(0.0, 5.0),
        )
        bones.append(Bone(f"carpal{i}", BoneShape(1.0, 1.0, 1.0, 1.0), Placement(np.zeros(2), 0.0), _raw(pts)))

    # Radius and ulna point down the forearm; their distal ends sit at the wrist.
    radius = BoneShape(140.0, rng.uniform(12.0, 14.0), 7.5, 8.0, head="round", base="flat")
    ulna = BoneShape(140.0, rng.uniform(6.5, 7.5), 5.5, 6.0, head="round", base="flat")
    bones.append(_bone("radius", radius, np.array([8.5, -1.5]) * (hand_width, 1.0), 180.0 + rng.normal(0, 2)))
    bones.append(_bone("ulna", ulna, np.array([-12.0, -4.0]) * (hand_width, 1.0), 180.0 + rng.normal(0, 2)))
    return bones, {name: joints[name] for name in JOINT_NAMES}


def _bone(name: str, shape: BoneShape, origin: np.ndarray, angle_deg: float) -> Bone:
    return Bone(
        name,
        shape,
        Placement(np.asarray(origin, dtype=np.float64), np.deg2rad(angle_deg)),
        bone_outline(shape),
    )


def _raw(points: np.ndarray) -> Outline:
    return Outline(points=points, head=slice(0, 0), base=slice(0, 0))


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(s[-1] / step) + 1, 2)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def _stretches(n: int, share: float, radial_first: bool, sites: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the destroyed stretch(es) of a contour of `n` points: erosions begin at the margins."""
    count = int(round(share * n))
    if count <= 0:
        return np.zeros(0, dtype=int)
    if count >= n:
        return np.arange(n)
    if sites == 1:
        return np.arange(count) if radial_first else np.arange(n - count, n)
    first = int(round(count * rng.uniform(0.35, 0.65)))
    return np.concatenate([np.arange(first), np.arange(n - (count - first), n)])


def erosion_for_joint(
    joint: Joint,
    score: int,
    to_px: ImageTransform,
    rng: np.random.Generator,
) -> tuple[float, dict[str, render.Erosion]]:
    """The destroyed share of the joint surface, and the bone removed from each of its two bone ends."""
    if score == 0:
        return 0.0, {}
    low, high = RATINGEN_BANDS[score]
    share = float(rng.uniform(low, high))
    px_per_mm = to_px.px_per_mm
    depth = EROSION_DEPTH_MM[score] * rng.uniform(0.9, 1.1) * px_per_mm
    sites = 1 if score == 1 else int(rng.integers(1, 3))
    radial_first = bool(rng.random() < 0.65)  # erosions favour the radial bare area
    erosions: dict[str, render.Erosion] = {}
    # Head arc runs radial -> ulnar, base curve ulnar -> radial: flip the base so index 0 is radial on both.
    for bone, part, flip in ((joint.proximal, joint.proximal.outline.head, False), (joint.distal, joint.distal.outline.base, True)):  # fmt: skip
        contour = _resample(to_px(bone.points_mm(part)), step=1.0)
        if flip:
            contour = contour[::-1]
        idx = _stretches(len(contour), share, radial_first, sites, rng)
        if len(idx) == 0:
            continue
        # Depth wanders along the stretch, and a few pits sit deeper inside: erosions are ragged.
        wobble = np.convolve(rng.normal(0.0, 1.0, len(idx) + 8), np.ones(9) / 3.0, mode="valid")[: len(idx)]
        radii = depth * np.clip(0.85 + 0.2 * wobble, 0.55, 1.3)
        centers = contour[idx]
        erosions[bone.name] = render.Erosion(centers=centers, radii=radii)
    return share, erosions


def hand_transform(
    rng: np.random.Generator,
    joints: dict[str, Joint],
    bones: list[Bone],
    shape: tuple[int, int],
    mm_per_px: float,
    mirror: bool,
) -> ImageTransform:
    """Pose: rotation, scale, translation; then shifted so every joint (and if possible every fingertip) fits."""
    h, w = shape
    scale = rng.uniform(0.8, 1.25)
    rotation = rng.uniform(-25.0, 25.0)
    anchor = (w * rng.uniform(0.4, 0.6), h * rng.uniform(0.35, 0.55))
    transform = ImageTransform.make(mm_per_px, scale, rotation, anchor, mirror=mirror)
    # Shift the mid-hand (not the wrist) to the anchor, then a random drift that may crop the forearm.
    mid = transform(np.array([[0.0, 75.0]]))[0]
    transform = transform.shifted(anchor[0] - mid[0], anchor[1] - mid[1])

    centers = transform(np.array([j.center_mm for j in joints.values()]))
    tips = transform(np.array([b.placement.point(b.shape.length + 4.0) for b in bones if b.name.startswith("distal")]))
    margin = 15.0 * transform.px_per_mm
    pts = np.concatenate([centers, tips])
    dx = (
        _fit_shift(pts[:, 0], margin * 0.4, w)
        if _fits(pts[:, 0], margin * 0.4, w)
        else _fit_shift(centers[:, 0], margin, w)
    )
    dy = (
        _fit_shift(pts[:, 1], margin * 0.4, h)
        if _fits(pts[:, 1], margin * 0.4, h)
        else _fit_shift(centers[:, 1], margin, h)
    )
    return transform.shifted(dx, dy)


def _fits(values: np.ndarray, margin: float, size: int) -> bool:
    return values.max() - values.min() + 2 * margin <= size


def _fit_shift(values: np.ndarray, margin: float, size: int) -> float:
    lo, hi = values.min() - margin, values.max() + margin
    if lo < 0:
        return -lo
    if hi > size:
        return size - hi
    return 0.0


def _draw_soft_tissue(bones: dict[str, Bone], to_px: ImageTransform):
    """Outline of fingers, palm, thumb web and forearm, for `render.soft_tissue`."""

    def draw(mask: np.ndarray, k: float) -> None:
        def px(pts):
            return np.round(to_px(np.asarray(pts)) * k * 16).astype(np.int32)

        def capsule(a, b, radius_mm):
            thickness = max(int(round(2 * radius_mm * to_px.px_per_mm * k)), 1)
            pa, pb = px([a, b])
            cv2.line(mask, tuple(pa), tuple(pb), 255, thickness, cv2.LINE_AA, 4)

        for ray in range(1, 6):
            meta = bones[f"metacarpal{ray}"]
            distal = bones[f"distal{ray}"]
            tip = distal.placement.point(distal.shape.length + (3.0 if ray > 1 else 4.0))
            prox = bones[f"proximal{ray}"]
            width = 9.5 if ray == 1 else (8.5 if ray < 5 else 7.5)
            capsule(meta.placement.point(meta.shape.length * 0.4), prox.placement.point(prox.shape.length), width)
            capsule(prox.placement.point(prox.shape.length), tip, width * 0.85)
        # Palm and thumb web: the hull of the metacarpals, widened by a few millimetres.
        palm = []
        for ray in range(1, 6):
            meta = bones[f"metacarpal{ray}"]
            palm += [
                meta.placement.origin,
                meta.placement.point(meta.shape.length * (0.6 if ray == 1 else 0.98)),
            ]
        palm += [(-30.0, 5.0), (30.0, 5.0)]
        hull = cv2.convexHull(px(palm).reshape(-1, 1, 2))
        cv2.fillPoly(mask, [hull], 255, cv2.LINE_AA, 4)
        cv2.polylines(mask, [hull], True, 255, max(int(10 * to_px.px_per_mm * k), 1), cv2.LINE_AA, 4)
        forearm = [(-31.0, 8.0), (32.0, 8.0), (40.0, -250.0), (-38.0, -250.0)]
        cv2.fillPoly(mask, [px(forearm)], 255, cv2.LINE_AA, 4)

    return draw


def _draw_ring(canvas: np.ndarray, bones: dict[str, Bone], to_px: ImageTransform, rng: np.random.Generator) -> None:
    """A metal ring on the ring finger's proximal phalanx: a dense band across the finger."""
    prox = bones["proximal4"]
    v = prox.shape.length * rng.uniform(0.3, 0.5)
    width = rng.uniform(2.0, 4.0)
    band = np.array([[-10.5, v - width / 2], [10.5, v - width / 2], [10.5, v + width / 2], [-10.5, v + width / 2]])
    render.draw_polygon(canvas, to_px(prox.placement.apply(band)), value=float(rng.uniform(2.5, 4.0)))


def render_hand(
    rng_geometry: np.random.Generator,
    rng_texture: np.random.Generator,
    rng_erosion: np.random.Generator,
    scores: dict[str, int],
    laterality: str = "L",
    shape: tuple[int, int] = (2560, 2048),
    mm_per_px: float = 0.12,
) -> HandPhantom:
    """Render one hand. Scores only change the joints: the rest depends on the geometry and texture streams."""
    bones_list, joints = build_skeleton(rng_geometry)
    bones = {b.name: b for b in bones_list}
    to_px = hand_transform(rng_geometry, joints, bones_list, shape, mm_per_px, mirror=laterality == "R")
    px_per_mm = to_px.px_per_mm
    exposure = render.Exposure.random(rng_geometry, shape)
    soft_thickness = rng_geometry.uniform(0.18, 0.3)
    has_ring = bool(rng_geometry.random() < 0.12)
    marker = laterality if rng_geometry.random() < 0.8 else None
    marker_pos = (
        int(rng_geometry.uniform(0.04, 0.8) * shape[1]),
        int(rng_geometry.uniform(0.05, 0.12) * shape[0]),
    )

    # One erosion stream per joint: changing one joint's score leaves every other joint as it was.
    joint_rngs = dict(zip(JOINT_NAMES, rng_erosion.spawn(len(JOINT_NAMES)), strict=True))
    destroyed: dict[str, float] = {}
    erosions: dict[str, list[render.Erosion]] = {}
    for name, joint in joints.items():
        share, per_bone = erosion_for_joint(joint, scores[name], to_px, joint_rngs[name])
        destroyed[name] = share
        for bone_name, erosion in per_bone.items():
            erosions.setdefault(bone_name, []).append(erosion)

    canvas = render.soft_tissue(shape, _draw_soft_tissue(bones, to_px), px_per_mm, soft_thickness, smooth_mm=1.6)
    look = render.BoneLook(
        cortex=rng_geometry.uniform(0.85, 1.15),
        medulla=rng_geometry.uniform(0.22, 0.36),
        cortex_mm=rng_geometry.uniform(0.9, 1.4),
        texture=rng_geometry.uniform(0.15, 0.3),
    )
    bone_px = {}
    for bone in bones_list:
        polygon = to_px(bone.points_mm())
        bone_px[bone.name] = polygon
        render.draw_bone(canvas, polygon, px_per_mm, rng_texture, look, erosions.get(bone.name))
    if has_ring:
        _draw_ring(canvas, bones, to_px, rng_geometry)
    if marker:
        render.draw_text(canvas, marker, marker_pos, int(12 * px_per_mm), value=3.0)
    image = render.expose(canvas, exposure, rng_texture)

    centers, axes, gaps = {}, {}, {}
    for name, joint in joints.items():
        c = to_px(joint.center_mm[None])[0]
        centers[name] = (float(c[0]), float(c[1]))
        d = to_px(joint.center_mm[None] + joint.distal.placement.axis)[0] - c
        axes[name] = tuple((d / np.linalg.norm(d)).tolist())
        gaps[name] = joint.gap_mm * px_per_mm
    return HandPhantom(
        image=image,
        laterality=laterality,
        scores=dict(scores),
        destroyed_share=destroyed,
        centers=centers,
        bones_px=bone_px,
        joint_axes=axes,
        gaps_px=gaps,
        joint_bones={name: (j.proximal.name, j.distal.name) for name, j in joints.items()},
        px_per_mm=px_per_mm,
        ring=has_ring,
        marker=marker,
    )
