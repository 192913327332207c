"""Drawing in attenuation units and turning attenuation into a detector image.

Everything is drawn into one float32 "attenuation" canvas, where overlapping structures add up as they do in a
projection. Bones are drawn patch by patch (only their bounding box is touched), so a full-size radiograph costs
a few full-frame passes at the end, in `expose`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

# Sub-pixel precision for OpenCV's polygon drawing (coordinates are multiplied by 2**SHIFT).
SHIFT = 4
TEXTURE_SIZE = 1024
OUTPUT_MAX = 4095  # radiographs are written with 12-bit values


@functools.cache
def trabecular_texture() -> np.ndarray:
    """A fixed band-pass noise tile (zero mean, unit std) standing in for trabecular bone.

    Made once per process from a fixed seed, so it costs nothing per image and keeps images deterministic.
    """
    rng = np.random.default_rng(20200624)
    spectrum = np.fft.rfft2(rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)))
    fy = np.fft.fftfreq(TEXTURE_SIZE)[:, None]
    fx = np.fft.rfftfreq(TEXTURE_SIZE)[None, :]
    f2 = fx**2 + fy**2

    # Band-pass (a difference of Gaussians) done in frequency space, so the tile wraps around seamlessly.
    def gaussian(sigma):
        return np.exp(-2.0 * (np.pi * sigma) ** 2 * f2)

    band = np.fft.irfft2(spectrum * (gaussian(1.2) - 0.8 * gaussian(4.0)), s=(TEXTURE_SIZE, TEXTURE_SIZE))
    # A trabecular network is stringy: emphasise ridges.
    band = np.tanh(2.0 * band / band.std())
    return ((band - band.mean()) / band.std()).astype(np.float32)


def texture_patch(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A patch of the trabecular texture at a random offset (wrapping around the tile)."""
    tex = trabecular_texture()
    oy, ox = rng.integers(0, TEXTURE_SIZE, size=2)
    rows = (oy + np.arange(height)) % TEXTURE_SIZE
    cols = (ox + np.arange(width)) % TEXTURE_SIZE
    return tex[np.ix_(rows, cols)]


@dataclass
class Erosion:
    """Bone removed from one bone end: discs along the destroyed stretch of the articular contour (pixels)."""

    centers: np.ndarray  # (K, 2)
    radii: np.ndarray  # (K,)


@dataclass(frozen=True)
class BoneLook:
    """How dense a bone looks: cortical rim, medulla, texture (attenuation units and millimetres)."""

    cortex: float = 1.0
    medulla: float = 0.42
    cortex_mm: float = 1.1
    texture: float = 0.22


def _patch_box(points: np.ndarray, margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    x0 = max(int(np.floor(points[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(points[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(points[:, 0].max())) + margin, shape[1])
    y1 = min(int(np.ceil(points[:, 1].max())) + margin, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _fill(mask: np.ndarray, points: np.ndarray, offset: tuple[int, int]) -> None:
    pts = np.round((points - offset) * (1 << SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=SHIFT)


def draw_bone(
    canvas: np.ndarray,
    polygon_px: np.ndarray,
    px_per_mm: float,
    rng: np.random.Generator,
    look: BoneLook = BoneLook(),
    erosions: list[Erosion] | None = None,
) -> None:
    """Add one bone to the attenuation canvas.

    The projected density of a tube is highest where the beam runs along the cortex, just inside the outline: the
    distance to the outline gives that bright rim, a darker medulla and trabecular texture inside. Erosions remove
    bone after the density is made, so the cortex is broken there rather than redrawn around the hole.
    """
    box = _patch_box(polygon_px, 3, canvas.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    mask = np.zeros((h, w), np.uint8)
    _fill(mask, polygon_px, (x0, y0))
    dist = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)

    c = max(look.cortex_mm * px_per_mm, 1.5)
    rim = np.minimum(dist / c, 1.0)
    cortex = rim * np.exp(-np.maximum(dist - c, 0.0) / (0.9 * c))
    medulla = 1.0 - np.exp(-dist / (1.5 * c))
    tex = texture_patch(rng, h, w)
    density = look.cortex * cortex + look.medulla * medulla * (1.0 + look.texture * tex)
    density *= mask.astype(np.float32) * (1.0 / 255.0)

    if erosions:
        lost = np.zeros((h, w), np.uint8)
        for erosion in erosions:
            for (cx, cy), r in zip(erosion.centers, erosion.radii, strict=True):
                center = (round((cx - x0) * (1 << SHIFT)), round((cy - y0) * (1 << SHIFT)))
                cv2.circle(lost, center, round(r * (1 << SHIFT)), 255, -1, cv2.LINE_AA, SHIFT)
        # A ragged margin: the destroyed zone fades into moth-eaten bone rather than ending in a clean cut.
        ragged = cv2.GaussianBlur(lost, (0, 0), 0.8 + 0.2 * px_per_mm).astype(np.float32) / 255.0
        # The bone's own texture patch roughens it, so no random draw is spent (other bones stay identical).
        density *= 1.0 - np.clip(ragged * (1.05 + 0.2 * tex), 0.0, 1.0)

    canvas[y0:y1, x0:x1] += density.astype(np.float32)


def draw_polygon(canvas: np.ndarray, polygon_px: np.ndarray, value: float, blur_px: float = 0.0) -> None:
    """Add a uniform-density polygon (metal, lead marker letters, organs)."""
    box = _patch_box(polygon_px, int(3 * blur_px) + 3, canvas.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, polygon_px, (x0, y0))
    patch = mask.astype(np.float32) * (value / 255.0)
    if blur_px > 0:
        patch = cv2.GaussianBlur(patch, (0, 0), blur_px)
    canvas[y0:y1, x0:x1] += patch


def draw_text(canvas: np.ndarray, text: str, origin_px: tuple[int, int], height_px: int, value: float) -> None:
    """Add lead letters (a side marker): dense, with a square frame around them."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height_px / 22.0
    thickness = max(2, height_px // 7)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    pad = height_px // 3
    x, y = origin_px
    box = (x - pad, y - th - pad, x + tw + pad, y + pad)
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[2], canvas.shape[1]), min(box[3], canvas.shape[0])
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    patch = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    cv2.putText(patch, text, (pad, pad + th), font, scale, 255, thickness, cv2.LINE_AA)
    cv2.rectangle(patch, (0, 0), (patch.shape[1] - 1, patch.shape[0] - 1), 110, max(1, thickness // 2))
    patch = patch[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]]
    canvas[y0:y1, x0:x1] += patch.astype(np.float32) * (value / 255.0)


def soft_tissue(
    shape: tuple[int, int],
    draw,
    px_per_mm: float,
    thickness: float,
    smooth_mm: float = 2.5,
    factor: int = 4,
) -> np.ndarray:
    """Render a soft-tissue thickness map at 1/`factor` resolution and scale it up.

    `draw(mask, scale)` draws the outline into a uint8 mask whose pixel coordinates are the full-size ones times
    `scale`. Blurring the filled outline gives a thickness that falls off smoothly at the skin, as a rounded limb
    does in projection; doing it at low resolution keeps it cheap.
    """
    h, w = shape
    small = np.zeros(((h + factor - 1) // factor, (w + factor - 1) // factor), np.uint8)
    draw(small, 1.0 / factor)
    sigma = max(smooth_mm * px_per_mm / factor, 0.8)
    blurred = cv2.GaussianBlur(small.astype(np.float32) * (1.0 / 255.0), (0, 0), sigma)
    profile = np.sqrt(np.clip(blurred, 0.0, 1.0)) * thickness
    return cv2.resize(profile, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Exposure:
    """Acquisition and processing settings of one radiograph."""

    mu: float  # attenuation to optical density
    gamma: float  # processing contrast curve
    background: float  # display value of the direct-exposure background (0..1)
    heel: float  # relative strength of the heel-effect gradient
    heel_angle: float  # direction of the gradient, radians
    blur_px: float  # detector unsharpness
    noise: float  # quantum noise, std in display units (0..1)
    collimation: tuple[int, int, int, int] | None  # exposed box x0, y0, x1, y1, or None
    shutter_value: float  # display value outside the collimated field

    @classmethod
    def random(cls, rng: np.random.Generator, shape: tuple[int, int]) -> Exposure:
        h, w = shape
        collimation = None
        if rng.random() < 0.6:
            mx, my = (
                (rng.uniform(0.0, 0.06, size=2) * (w, h)).astype(int),
                (rng.uniform(0.0, 0.05, 2) * h).astype(int),
            )
            collimation = (int(mx[0]), int(my[0]), int(w - mx[1]), int(h - my[1]))
        return cls(
            mu=float(rng.uniform(0.6, 1.0)),
            gamma=float(rng.uniform(0.75, 1.35)),
            background=float(rng.uniform(0.01, 0.12)),
            heel=float(rng.uniform(0.02, 0.12)),
            heel_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
            blur_px=float(rng.uniform(0.5, 1.6)),
            noise=float(rng.uniform(0.004, 0.022)),
            collimation=collimation,
            shutter_value=float(rng.choice([0.0, 0.93, 0.97])),
        )


@functools.lru_cache(maxsize=64)
def _display_lut(mu: float, gamma: float, background: float, steps: int = 4096) -> np.ndarray:
    """Attenuation (0..8 in `steps` bins) to display value (0..1): log response, then the contrast curve."""
    att = np.linspace(0.0, 8.0, steps, dtype=np.float64)
    density = 1.0 - np.exp(-mu * att)
    return (background + (1.0 - background) * density**gamma).astype(np.float32)


def expose(attenuation: np.ndarray, exposure: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Turn an attenuation map into a 12-bit detector image (uint16, bone bright, MONOCHROME2)."""
    h, w = attenuation.shape
    if exposure.blur_px > 0.3:
        attenuation = cv2.GaussianBlur(attenuation, (0, 0), exposure.blur_px)
    # Heel effect: the anode side of the field receives less exposure and looks lighter.
    gx, gy = np.cos(exposure.heel_angle), np.sin(exposure.heel_angle)
    ramp = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :] * gx + (np.arange(h, dtype=np.float32) / h - 0.5)[
        :, None
    ] * gy
    attenuation = attenuation + ramp * (2.0 * exposure.heel)

    lut = _display_lut(round(exposure.mu, 3), round(exposure.gamma, 3), round(exposure.background, 3))
    steps = len(lut)
    index = np.clip(attenuation * ((steps - 1) / 8.0), 0, steps - 1).astype(np.int32)
    display = lut[index]

    # Quantum noise: stronger where fewer photons arrive (bright, attenuated regions show less of it here
    # because processing compresses them; a mild signal dependence is enough to look right).
    noise = rng.standard_normal((h, w), dtype=np.float32)
    display += noise * (exposure.noise * (0.7 + 0.6 * display))

    if exposure.collimation is not None:
        x0, y0, x1, y1 = exposure.collimation
        for region in (np.s_[:y0, :], np.s_[y1:, :], np.s_[:, :x0], np.s_[:, x1:]):
            display[region] = exposure.shutter_value
    return np.clip(display * OUTPUT_MAX + 0.5, 0, OUTPUT_MAX).astype(np.uint16)
