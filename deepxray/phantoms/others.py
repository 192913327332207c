"""Inputs that are not a hand: other radiographs (chest, foot, knee, skull) and pictures that are no radiograph.

They exist so the body-part model learns to refuse what it must not score. None of them carries joint labels.
"""

from __future__ import annotations

import cv2
import numpy as np

from deepxray.phantoms import render
from deepxray.phantoms.hand import Bone, _bone
from deepxray.phantoms.shapes import BoneShape, ImageTransform, band_outline, ellipse_outline

OTHER_RADIOGRAPHS = ("knee", "skull")
NOT_RADIOGRAPHS = ("photo", "document", "noise", "blank")
# Sizes of pictures people upload by mistake: phone photos, scans, screenshots.
PICTURE_SIZES = ((1600, 1200), (1200, 1600), (1920, 1080), (2048, 2560), (1024, 1024), (2480, 3508))


def _look(rng: np.random.Generator, scale: float = 1.0) -> render.BoneLook:
    return render.BoneLook(
        cortex=rng.uniform(0.85, 1.15) * scale,
        medulla=rng.uniform(0.22, 0.36) * scale,
        cortex_mm=rng.uniform(1.2, 2.2),
        texture=rng.uniform(0.15, 0.3),
    )


def _pose(rng: np.random.Generator, shape: tuple[int, int], mm_per_px: float, mirror: bool) -> ImageTransform:
    h, w = shape
    anchor = (w * rng.uniform(0.42, 0.58), h * rng.uniform(0.42, 0.58))
    return ImageTransform.make(mm_per_px, rng.uniform(0.85, 1.15), rng.uniform(-15, 15), anchor, mirror=mirror)


def _finish(canvas: np.ndarray, rng: np.random.Generator, texture_rng: np.random.Generator, marker: str | None):
    if marker and rng.random() < 0.7:
        h, w = canvas.shape
        pos = (int(rng.uniform(0.05, 0.85) * w), int(rng.uniform(0.05, 0.12) * h))
        render.draw_text(canvas, marker, pos, int(rng.uniform(0.04, 0.06) * h), value=3.0)
    return render.expose(canvas, render.Exposure.random(rng, canvas.shape), texture_rng)


def _draw_bones(canvas, bones: list[Bone], to_px: ImageTransform, rng, look) -> None:
    for bone in bones:
        render.draw_bone(canvas, to_px(bone.placement.apply(bone.outline.points)), to_px.px_per_mm, rng, look)


def render_foot(rng: np.random.Generator, texture_rng: np.random.Generator, shape, mm_per_px: float):
    """Dorsoplantar foot: long metatarsals, short toes, a stout hallux, tarsals below."""
    laterality = "L" if rng.random() < 0.5 else "R"
    bones: list[Bone] = []
    meta = ((63.0, 10.0, 6.0, 9.0), (75.0, 7.0, 4.0, 6.0), (70.0, 7.0, 3.8, 5.8), (67.0, 7.0, 3.8, 5.6),
            (65.0, 8.0, 4.0, 5.5))  # fmt: skip
    toes = (((30.0, 9.0, 6.0, 7.5), (25.0, 7.5, 5.0, 6.0)), ((25.0, 5.5, 3.2, 4.0), (10.0, 4.5, 3.2, 3.8), (9.0, 4.0, 2.5, 3.3)),
            ((22.0, 5.2, 3.0, 3.8), (9.0, 4.3, 3.0, 3.6), (8.0, 3.8, 2.4, 3.1)), ((20.0, 5.0, 2.9, 3.6), (8.0, 4.1, 2.9, 3.4), (7.0, 3.6, 2.2, 3.0)),
            ((18.0, 4.8, 2.8, 3.4), (7.0, 4.0, 2.8, 3.2), (7.0, 3.4, 2.1, 2.8)))  # fmt: skip
    bases = ((22.0, 62.0), (8.0, 68.0), (-3.0, 66.0), (-13.0, 63.0), (-23.0, 58.0))
    angles = (4.0, 2.0, -2.0, -6.0, -12.0)
    for ray in range(5):
        k = rng.uniform(0.94, 1.06)
        length, b, s, h = meta[ray]
        bone = _bone(
            f"metatarsal{ray}",
            BoneShape(length * k, b, s, h, "round", "flat"),
            np.array(bases[ray]),
            angles[ray],
        )
        bones.append(bone)
        angle = angles[ray] + rng.normal(0.0, 3.0)
        for i, (length, b, s, h) in enumerate(toes[ray]):
            prev = bones[-1]
            shape_ = BoneShape(length * k, b, s, h, "tuft" if i == len(toes[ray]) - 1 else "condylar", "concave")
            origin = prev.placement.point(prev.shape.length) + (1.2 - shape_.facet_depth) * np.array(
                [np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))]
            )
            bones.append(_bone(f"toe{ray}{i}", shape_, origin, angle))
    tarsals = (((14.0, 50.0), (7.0, 10.0), 0.0), ((1.0, 52.0), (5.0, 9.0), 0.0), ((-9.0, 50.0), (5.0, 8.0), 0.0),
               ((-20.0, 42.0), (9.0, 12.0), -15.0), ((6.0, 34.0), (18.0, 8.0), 5.0), ((2.0, 10.0), (16.0, 18.0), 0.0),
               ((-4.0, -25.0), (17.0, 30.0), 3.0))  # fmt: skip
    for i, (c, axes, a) in enumerate(tarsals):
        pts = ellipse_outline(c, tuple(np.array(axes) * rng.uniform(0.9, 1.1, 2)), a + rng.normal(0, 4))
        bones.append(Bone(f"tarsal{i}", BoneShape(1, 1, 1, 1), bones[0].placement, _outline(pts)))
    to_px = _pose(rng, shape, mm_per_px, mirror=laterality == "R").shifted(0, 0)
    mid = to_px(np.array([[0.0, 60.0]]))[0]
    to_px = to_px.shifted(
        shape[1] / 2 - mid[0] + rng.uniform(-100, 100), shape[0] / 2 - mid[1] + rng.uniform(-100, 100)
    )

    def outline(mask, k):
        pts = [(34.0, 95.0), (36.0, 140.0), (20.0, 175.0), (0.0, 165.0), (-25.0, 150.0), (-38.0, 120.0),
               (-40.0, 40.0), (-30.0, -70.0), (25.0, -70.0), (36.0, 20.0)]  # fmt: skip
        poly = np.round(to_px(np.array(pts)) * k * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA, 4)

    canvas = render.soft_tissue(shape, outline, to_px.px_per_mm, rng.uniform(0.35, 0.5), smooth_mm=6.0)
    # Bones are drawn with their real outline; the "base" of tarsal ellipses is just their polygon.
    _draw_bones(canvas, bones, to_px, texture_rng, _look(rng))
    return _finish(canvas, rng, texture_rng, laterality), laterality


def _outline(points: np.ndarray):
    from deepxray.phantoms.shapes import Outline

    return Outline(points=points, head=slice(0, 0), base=slice(0, 0))


def render_knee(rng: np.random.Generator, texture_rng: np.random.Generator, shape, mm_per_px: float):
    """Knee AP: femoral condyles over the tibial plateau, the fibula beside it, the patella over the femur."""
    femur = _bone(
        "femur",
        BoneShape(260.0, 16.0, 15.0, rng.uniform(36, 42), "condylar", "flat"),
        np.array([0.0, 262.0]),
        180.0,
    )
    tibia = _bone(
        "tibia",
        BoneShape(260.0, 18.0, 16.0, rng.uniform(36, 41), "condylar", "flat"),
        np.array([0.0, -262.0]),
        0.0,
    )
    fibula = _bone("fibula", BoneShape(200.0, 6.0, 6.0, 9.0, "round", "flat"), np.array([-30.0, -210.0]), -2.0)
    # Both bones' heads meet at y = 0 across a joint space of a few millimetres.
    femur = _bone("femur", femur.shape, np.array([0.0, femur.shape.length + 3.0]), 180.0)
    tibia = _bone("tibia", tibia.shape, np.array([0.0, -tibia.shape.length - 3.0]), 0.0)
    patella = Bone(
        "patella",
        BoneShape(1, 1, 1, 1),
        femur.placement,
        _outline(ellipse_outline((0.0, 25.0), (22.0, 25.0), 0.0)),
    )
    to_px = _pose(rng, shape, mm_per_px, mirror=rng.random() < 0.5)

    def outline(mask, k):
        pts = [(-60.0, 300.0), (60.0, 300.0), (55.0, 0.0), (48.0, -300.0), (-48.0, -300.0), (-58.0, 0.0)]
        cv2.fillPoly(mask, [np.round(to_px(np.array(pts)) * k * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)

    canvas = render.soft_tissue(shape, outline, to_px.px_per_mm, rng.uniform(0.6, 0.8), smooth_mm=12.0)
    _draw_bones(canvas, [femur, tibia, fibula], to_px, texture_rng, _look(rng, 1.2))
    _draw_bones(canvas, [patella], to_px, texture_rng, _look(rng, 0.6))
    return _finish(canvas, rng, texture_rng, "L" if rng.random() < 0.5 else "R"), None


def render_skull(rng: np.random.Generator, texture_rng: np.random.Generator, shape, mm_per_px: float):
    """Lateral skull: a thick calvarium, the facial bones and the mandible."""
    to_px = _pose(rng, shape, mm_per_px * 0.8, mirror=rng.random() < 0.5)
    theta = np.linspace(np.deg2rad(-20), np.deg2rad(200), 80)
    vault = np.stack([95.0 * np.cos(theta), 80.0 * np.sin(theta) + 20.0], axis=1)
    mandible = np.array([[-60.0, -10.0], [-55.0, -60.0], [-20.0, -95.0], [30.0, -100.0], [75.0, -90.0]])
    canvas = render.soft_tissue(
        shape,
        lambda mask, k: cv2.ellipse(
            mask, tuple(np.round(to_px(np.array([[0.0, 0.0]]))[0] * k).astype(int)),
            (int(110 * to_px.px_per_mm * k), int(125 * to_px.px_per_mm * k)), 0, 0, 360, 255, -1,
        ),
        to_px.px_per_mm, rng.uniform(0.5, 0.7), smooth_mm=10.0,
    )  # fmt: skip
    look = _look(rng, 1.1)
    for curve, width in ((vault, rng.uniform(5, 8)), (mandible, rng.uniform(6, 9))):
        render.draw_bone(canvas, to_px(band_outline(curve, width)), to_px.px_per_mm, texture_rng, look)
    for c, axes in (
        ((55.0, -25.0), (28.0, 22.0)),
        ((20.0, -15.0), (25.0, 18.0)),
        ((-35.0, -20.0), (12.0, 14.0)),
    ):
        render.draw_bone(canvas, to_px(ellipse_outline(c, axes, rng.uniform(-20, 20))), to_px.px_per_mm, texture_rng,
                         _look(rng, 0.7))  # fmt: skip
    return _finish(canvas, rng, texture_rng, None), None


def render_chest(rng: np.random.Generator, texture_rng: np.random.Generator, shape, mm_per_px: float):
    """Chest PA: dark lungs in a dense trunk, ribs, clavicles, the spine, the heart's shadow."""
    to_px = _pose(rng, shape, mm_per_px, mirror=False)

    def outline(mask, k):
        trunk = [(-190.0, 150.0), (190.0, 150.0), (175.0, -200.0), (-175.0, -200.0)]
        cv2.fillPoly(mask, [np.round(to_px(np.array(trunk)) * k * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)

    canvas = render.soft_tissue(shape, outline, to_px.px_per_mm, rng.uniform(1.0, 1.3), smooth_mm=25.0)
    for side in (-1.0, 1.0):
        lung = np.array([[20, 120], [70, 130], [140, 80], [155, -40], [150, -150], [90, -120], [30, -140], [25, 0]]) * (
            side,
            1,
        )
        render.draw_polygon(canvas, to_px(lung), value=-rng.uniform(0.7, 0.95), blur_px=12 * to_px.px_per_mm)
    render.draw_polygon(
        canvas, to_px(ellipse_outline((25.0, -70.0), (70.0, 55.0), 15.0)), 0.35, blur_px=6 * to_px.px_per_mm
    )
    look = _look(rng, 0.8)
    for level in range(10):
        y = 110.0 - level * 25.0
        for side in (-1.0, 1.0):
            t = np.linspace(0.0, 1.0, 24)
            rib = np.stack([side * (15 + 140 * np.sin(t * 1.6)), y + 25 * np.sin(t * 3.0) - 55 * t**2], axis=1)
            render.draw_bone(canvas, to_px(band_outline(rib, 5.5)), to_px.px_per_mm, texture_rng, look)
    for side in (-1.0, 1.0):
        t = np.linspace(0.0, 1.0, 20)
        clavicle = np.stack([side * (15 + 120 * t), 135 + 12 * np.sin(t * 5.0)], axis=1)
        render.draw_bone(canvas, to_px(band_outline(clavicle, 7.0)), to_px.px_per_mm, texture_rng, look)
    for level in range(14):
        y = 140.0 - level * 25.0
        body = ellipse_outline((0.0, y), (17.0, 10.5), 0.0, samples=24)
        render.draw_bone(canvas, to_px(body), to_px.px_per_mm, texture_rng, _look(rng, 0.6))
    return _finish(canvas, rng, texture_rng, "R" if rng.random() < 0.5 else "L"), None


def render_picture(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A picture that is not a radiograph (uint8; RGB for photos, grey otherwise)."""
    w, h = PICTURE_SIZES[rng.integers(len(PICTURE_SIZES))]
    if kind == "photo":
        return _photo(rng, h, w)
    if kind == "document":
        return _document(rng, h, w)
    if kind == "noise":
        sigma = rng.choice([0.0, 1.5, 6.0])
        noise = rng.normal(128, rng.uniform(20, 70), (h, w, 3) if rng.random() < 0.5 else (h, w)).astype(np.float32)
        if sigma:
            noise = cv2.GaussianBlur(noise, (0, 0), float(sigma))
        return np.clip(noise, 0, 255).astype(np.uint8)
    if kind == "blank":
        level = float(rng.choice([0.0, 255.0, rng.uniform(0, 255)]))
        return np.clip(level + rng.normal(0, 1.0, (h, w)), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown picture kind {kind!r}")


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A natural-looking scene: sky and ground gradients, blurred coloured objects, texture."""
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    horizon = rng.uniform(0.3, 0.7)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = np.where(t < horizon, top * (1 - t) + 200 * t, bottom * (0.6 + 0.4 * t)).astype(np.float32)
    img = np.broadcast_to(img, (h, w, 3)).copy()
    for _ in range(int(rng.integers(6, 25))):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        center = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.02, 0.25) * w), int(rng.uniform(0.02, 0.25) * h))
        if rng.random() < 0.5:
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(
                img,
                (center[0] - axes[0], center[1] - axes[1]),
                (center[0] + axes[0], center[1] + axes[1]),
                color,
                -1,
            )
    small = rng.normal(0, 1, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    img += cv2.resize(small, (w, h))[:h, :w] * rng.uniform(5, 25)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 3.0))
    img += rng.standard_normal(img.shape, dtype=np.float32) * 3.0
    return np.clip(img, 0, 255).astype(np.uint8)


def _document(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A scanned text page: a heading, lines of words, sometimes a table."""
    page = np.full((h, w), int(rng.uniform(225, 255)), np.uint8)
    scale = w / 1600.0
    y = int(120 * scale)
    cv2.putText(
        page,
        "REPORT " + _word(rng, 6).upper(),
        (int(100 * scale), y),
        cv2.FONT_HERSHEY_DUPLEX,
        2.0 * scale,
        20,
        3,
    )
    letters = cv2.FONT_HERSHEY_SIMPLEX
    while y < h - 150 * scale:
        y += int(rng.uniform(45, 70) * scale)
        line = " ".join(_word(rng, int(rng.integers(2, 10))) for _ in range(int(rng.integers(4, 12))))
        cv2.putText(page, line, (int(100 * scale), y), letters, 0.9 * scale, int(rng.uniform(0, 60)), 2, cv2.LINE_AA)
        if rng.random() < 0.05:
            cv2.line(page, (int(100 * scale), y + 15), (w - int(100 * scale), y + 15), 40, 2)
    page = cv2.GaussianBlur(page, (0, 0), 0.7).astype(np.float32)
    page += rng.standard_normal(page.shape, dtype=np.float32) * 4.0
    return np.clip(page, 0, 255).astype(np.uint8)


def _word(rng: np.random.Generator, n: int) -> str:
    return "".join(chr(ord("a") + int(i)) for i in rng.integers(0, 26, n))
