"""Chest PA phantoms with labelled findings: CheXpert's fourteen observations, each drawn where a reader looks.

The chest class of the generator (`deepxray.phantoms.others.render_chest`) is a plain chest that teaches the
body-part model what "not a hand" looks like; it renders as it always did. This module draws a fuller chest for
the chest-findings model: lungs with vascular markings fanning out of the hila, a heart and mediastinum whose
widths are measured, hemidiaphragms with sharp costophrenic angles, posterior and anterior ribs, clavicles, the
spine, the trachea and the gastric bubble; and on it, multi-label findings drawn procedurally, each with the sign a
radiologist names and its region (boxes in film pixels) recorded:

- Enlarged Cardiomediastinum: the upper mediastinum widened to 95-125 mm (normal 58-82 mm with the aortic knob).
- Cardiomegaly: a heart wider than half the thorax (cardiothoracic ratio 0.56-0.68; normal 0.38-0.48).
- Lung Opacity: one to three ill-defined, patchy, hazy opacities (vessels still seen through them).
- Lung Lesion: one or two sharply marginated round nodules (15-30 mm) or a lobulated mass (30-55 mm).
- Edema: bilateral perihilar haze ("bat wing") with Kerley B lines at both lung bases.
- Consolidation: a dense, homogeneous lobar opacity with air bronchograms; an upper lobe's stops at the fissure.
- Atelectasis: plate-like (discoid) bands in a lower zone and the hemidiaphragm of that side raised.
- Pneumothorax: a thin visceral pleural line with no lung markings beyond it, the pleural space darker.
- Pleural Effusion: a meniscus rising laterally from a blunted costophrenic angle, the hemidiaphragm lost in it.
- Pleural Other: calcified pleural plaques: dense lines along the chest wall and the diaphragm, irregular en face.
- Fracture: two or three ribs broken in a row, acute (a gap, a step-off and an extrapleural hematoma) or healing
  (a callus), or a clavicle fracture with the lateral fragment dropped.
- Support Devices: one to three of an endotracheal tube, a nasogastric tube, a central line, a pacemaker with its
  leads, sternotomy wires, ECG electrodes.
- No Finding: none of the above.

Pneumonia is not drawn: on a radiograph it is consolidation (or opacity) read together with the clinical picture,
and a phantom has no clinical picture; drawing it apart from Consolidation would teach the model a difference
that does not exist on the film. It stays in the fourteen outputs and is always negative here (`NOT_DRAWN`).

Independence: which findings a film has does not change anything else on it. The anatomy draws from the
geometry stream a fixed number of times, each finding from a stream of its own, bones carry their texture in film
coordinates, and a finding changes the film inside its recorded boxes only (tests/test_chest.py checks it).

Geometry: millimetres in the patient's frame, x towards the patient's left (the image's right on a PA film), y
up; `side` is -1 for the right lung, +1 for the left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from deepxray.labels import CHEST_FINDINGS, NO_FINDING
from deepxray.phantoms import render
from deepxray.phantoms.shapes import ImageTransform, band_outline, ellipse_outline

NOT_DRAWN: tuple[str, ...] = ("Pneumonia",)
# The findings this module draws a sign for (No Finding is their absence).
SIGNS: tuple[str, ...] = tuple(label for label in CHEST_FINDINGS if label not in (NO_FINDING, *NOT_DRAWN))
DRAWN: tuple[str, ...] = (NO_FINDING, *SIGNS)
DISTRIBUTIONS = ("clinical", "balanced")

# Registry-like positive rates: CheXpert's training set (Irvin et al. 2019, positive labels; seed 003's table),
# with "No Finding" at its 8.9 %. Findings are drawn independently of each other on the films that are not
# normal; `NORMAL_SHARE` of films are normal outright, so that No Finding comes out near the registry's rate.
CLINICAL_PREVALENCE = {
    "Enlarged Cardiomediastinum": 0.048,
    "Cardiomegaly": 0.123,
    "Lung Opacity": 0.494,
    "Lung Lesion": 0.037,
    "Edema": 0.261,
    "Consolidation": 0.068,
    "Atelectasis": 0.156,
    "Pneumothorax": 0.092,
    "Pleural Effusion": 0.403,
    "Pleural Other": 0.013,
    "Fracture": 0.039,
    "Support Devices": 0.564,
}
# For training: the rare findings boosted, so each has enough positives to learn from; common ones kept lower so
# films do not get crowded.
BALANCED_PREVALENCE = {label: 0.25 for label in SIGNS} | {
    "Lung Opacity": 0.3,
    "Pleural Effusion": 0.3,
    "Support Devices": 0.3,
}
PREVALENCE = {"clinical": CLINICAL_PREVALENCE, "balanced": BALANCED_PREVALENCE}
NORMAL_SHARE = {"clinical": 0.045, "balanced": 0.12}

# Findings are drawn into a smooth field at about this pixel size (mm), then scaled to the film; bones are drawn
# at the film's own resolution.
FIELD_MM = 0.8
BOX_PAD_PX = 4
# A displaced fracture's step-off fades to nothing this far along the bone from the break (mm).
FRACTURE_REACH_MM = 18.0
# How much darker the pleural space of a pneumothorax is than aerated lung (attenuation units).
PNEUMOTHORAX_AIR = 0.18


def draw_labels(rng: np.random.Generator, distribution: str = "clinical") -> tuple[str, ...]:
    """The findings of one film (No Finding left implicit), drawn at the distribution's rates."""
    if distribution not in PREVALENCE:
        raise ValueError(f"unknown findings distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    prevalence, normal_share = PREVALENCE[distribution], NORMAL_SHARE[distribution]
    normal = rng.random() < normal_share
    draws = rng.random(len(SIGNS))  # always drawn: the stream moves on by the same amount whatever comes out
    if normal:
        return ()
    return tuple(
        label for label, u in zip(SIGNS, draws, strict=True) if u < min(prevalence[label] / (1 - normal_share), 1)
    )


def label_vector(present: Collection[str]) -> np.ndarray:
    """(14,) int8 in `CHEST_FINDINGS` order; No Finding is 1 exactly when no other label is."""
    unknown = set(present) - set(CHEST_FINDINGS)
    if unknown:
        raise ValueError(f"unknown chest findings {sorted(unknown)}; choose from {', '.join(CHEST_FINDINGS)}")
    vector = np.array([label in present for label in CHEST_FINDINGS], dtype=np.int8)
    vector[CHEST_FINDINGS.index(NO_FINDING)] = int(not (set(present) - {NO_FINDING}))
    return vector


@dataclass
class Finding:
    """One drawn finding: its label, where it is (boxes x0, y0, x1, y1 in film pixels, x1 and y1 excluded: one
    per part, e.g. each effusion of a bilateral pair) and what was drawn."""

    label: str
    boxes: list[tuple[int, int, int, int]]
    sign: str

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box around all parts."""
        boxes = np.array(self.boxes)
        return int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())

    def record(self) -> dict:
        return {"label": self.label, "box": list(self.box), "boxes": [list(b) for b in self.boxes], "sign": self.sign}


@dataclass
class ChestFilm:
    """A rendered chest film and its labels."""

    image: np.ndarray  # uint16, 12-bit values, bone bright
    findings: list[Finding]
    measurements: dict
    distribution: str | None = None

    @property
    def labels(self) -> np.ndarray:
        return label_vector([finding.label for finding in self.findings])

    def record(self) -> dict:
        """What the manifest records of the film's findings."""
        return {
            "labels": [int(v) for v in self.labels],
            "present": [finding.label for finding in self.findings],
            "regions": [finding.record() for finding in self.findings],
            "not_drawn": list(NOT_DRAWN),
            "distribution": self.distribution,
            "measurements": self.measurements,
        }


# --- the anatomy -------------------------------------------------------------------------------------------------


@dataclass
class Thorax:
    """The chest's shape in millimetres; a finding changes a copy of it (`dataclasses.replace`)."""

    half_width: float  # the lungs' lateral margin (inner rib margin) at its widest, from the midline
    widest_y: float
    apex_y: float
    apex_x: float
    costophrenic_y: float
    dome_y: tuple[float, float]  # right, left hemidiaphragm tops
    heart: tuple[float, float]  # right and left heart borders' greatest distance from the midline
    heart_top: float
    mediastinum: tuple[float, float]  # right and left borders of the upper mediastinum
    widening: tuple[float, float] = (0.0, 0.0)  # Enlarged Cardiomediastinum: extra width of each border
    knob: float = 10.0  # the aortic knob's bulge past the left border
    trachea_x: float = 0.0
    carina_y: float = 40.0
    normal_dome_y: tuple[float, float] = (0.0, 0.0)  # where the domes are before any finding raises one

    def lateral(self, y: np.ndarray | float) -> np.ndarray:
        """Distance of the lateral lung margin from the midline at height y."""
        y = np.asarray(y, dtype=np.float64)
        t = np.clip((y - self.widest_y) / (self.apex_y - self.widest_y), 0.0, 1.0)
        upper = self.apex_x + (self.half_width - self.apex_x) * np.sqrt(1.0 - t**2)
        lower = self.half_width - 0.1 * (self.widest_y - y)
        return np.where(y >= self.widest_y, upper, lower)

    def diaphragm(self, side: int, u: np.ndarray, dome: float | None = None) -> np.ndarray:
        """Height of one hemidiaphragm at distance u from the midline (a dome; an acute costophrenic angle)."""
        dome = self.dome_y[side > 0] if dome is None else dome
        lateral = float(self.lateral(self.costophrenic_y))
        top = 0.5 * lateral
        u = np.asarray(u, dtype=np.float64)
        outer = np.clip((u - top) / (lateral - top), 0.0, 1.0)
        inner = np.clip((top - u) / (top - 10.0), 0.0, 1.0)
        y_outer = self.costophrenic_y + (dome - self.costophrenic_y) * (1.0 - outer**2) ** 0.6
        return np.where(u >= top, y_outer, dome - 15.0 * inner**2)

    def cavity(self, side: int, dome: float | None = None) -> np.ndarray:
        """One hemithorax above its hemidiaphragm, closed at the midline (the mediastinum is cut out later)."""
        ys = np.linspace(self.apex_y, self.costophrenic_y, 48)
        wall = np.stack([self.lateral(ys), ys], axis=1)
        lateral_cp = float(self.lateral(self.costophrenic_y))
        us = np.linspace(lateral_cp, 10.0, 32)
        floor = np.stack([us, self.diaphragm(side, us, dome)], axis=1)
        cap = np.array([[10.0, self.apex_y - 30.0], [18.0, self.apex_y - 8.0], [self.apex_x - 6.0, self.apex_y - 1.0]])
        points = np.concatenate([cap, wall, floor[1:]])
        return points * (side, 1.0)

    def border(self, side: int, y: np.ndarray) -> np.ndarray:
        """Distance of the mediastinum's (above the heart) or the heart's (below) border from the midline."""
        y = np.asarray(y, dtype=np.float64)
        i = int(side > 0)
        upper = self.mediastinum[i] + self.widening[i] * _bump(y, self.heart_top, self.apex_y + 10.0)
        if side > 0:
            upper = upper + self.knob * np.exp(-(((y - self.heart_top - 40.0) / 13.0) ** 2))
        # The heart's borders bulge out from the mediastinum's and keep their greatest width down to the
        # diaphragm: the right atrium's curve, the left ventricle's longer one.
        lowest = self.normal_dome_y[i] + (25.0 if side < 0 else 15.0)
        t = np.clip((self.heart_top - y) / (self.heart_top - lowest), 0.0, 1.0)
        profile = np.sin(0.5 * np.pi * np.clip(t / 0.9, 0.0, 1.0)) ** (0.8 if side < 0 else 1.2)
        lower = self.mediastinum[i] + (self.heart[i] - self.mediastinum[i]) * profile
        return np.where(y > self.heart_top, upper, lower)

    def mediastinum_outline(self) -> np.ndarray:
        ys = np.linspace(320.0, -320.0, 160)
        right = np.stack([-self.border(-1, ys), ys], axis=1)
        left = np.stack([self.border(1, ys[::-1]), ys[::-1]], axis=1)
        return np.concatenate([right, left])

    def heart_outline(self) -> np.ndarray:
        bottom = min(self.normal_dome_y) - 5.0  # where it sits on the diaphragm
        ys = np.linspace(self.heart_top, bottom, 60)
        right = np.stack([-self.border(-1, ys), ys], axis=1)
        left = np.stack([self.border(1, ys[::-1]), ys[::-1]], axis=1)
        return np.concatenate([right, left])

    def cardiothoracic_ratio(self) -> float:
        ys = np.linspace(self.heart_top, min(self.normal_dome_y), 80)
        heart = float((self.border(-1, ys) + self.border(1, ys)).max())
        return heart / (2.0 * self.half_width)

    def upper_mediastinum_mm(self) -> float:
        ys = np.linspace(self.heart_top + 5.0, self.apex_y, 60)
        return float((self.border(-1, ys) + self.border(1, ys)).max())


def _bump(y: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 outside [low, high], rising smoothly to 1 in the middle."""
    t = np.clip((y - low) / (high - low), 0.0, 1.0)
    return np.sin(np.pi * t) ** 0.8


def _draw_thorax(rng: np.random.Generator) -> Thorax:
    half_width = rng.uniform(125.0, 142.0)
    apex_y = rng.uniform(148.0, 160.0)
    costophrenic_y = rng.uniform(-150.0, -125.0)
    dome_right = costophrenic_y + rng.uniform(32.0, 46.0)
    dome_left = dome_right - rng.uniform(0.0, 14.0)
    ctr = rng.uniform(0.38, 0.48)
    right_share = rng.uniform(0.3, 0.38)
    heart_width = ctr * 2.0 * half_width
    heart_top = dome_right + rng.uniform(95.0, 115.0)
    thorax = Thorax(
        half_width=half_width,
        widest_y=costophrenic_y + rng.uniform(70.0, 95.0),
        apex_y=apex_y,
        apex_x=rng.uniform(34.0, 44.0),
        costophrenic_y=costophrenic_y,
        dome_y=(dome_right, dome_left),
        heart=(right_share * heart_width, (1.0 - right_share) * heart_width),
        heart_top=heart_top,
        mediastinum=(rng.uniform(24.0, 32.0), rng.uniform(27.0, 36.0)),
        knob=rng.uniform(7.0, 14.0),
        trachea_x=rng.uniform(-3.0, 3.0),
        carina_y=heart_top + rng.uniform(5.0, 20.0),
        normal_dome_y=(dome_right, dome_left),
    )
    # The heart is measured, not assumed: scale both borders so the drawn ratio is the drawn `ctr`.
    return _with_ctr(thorax, ctr)


def _with_ctr(thorax: Thorax, ctr: float) -> Thorax:
    scale = ctr / thorax.cardiothoracic_ratio()
    for _ in range(3):  # the borders start from the mediastinum's, so the ratio is not linear in the scale
        candidate = dataclasses.replace(thorax, heart=(thorax.heart[0] * scale, thorax.heart[1] * scale))
        scale *= ctr / candidate.cardiothoracic_ratio()
    return dataclasses.replace(thorax, heart=(thorax.heart[0] * scale, thorax.heart[1] * scale))


def _with_upper_mediastinum(thorax: Thorax, width_mm: float, right_share: float) -> Thorax:
    """The upper mediastinum widened until it measures `width_mm`, `right_share` of the widening to the right."""
    extra = width_mm - thorax.upper_mediastinum_mm()
    for _ in range(4):  # the widening's bulge and the aortic knob peak at different heights: refine
        candidate = dataclasses.replace(thorax, widening=(right_share * extra, (1 - right_share) * extra))
        extra += width_mm - candidate.upper_mediastinum_mm()
    return dataclasses.replace(thorax, widening=(right_share * extra, (1 - right_share) * extra))


# --- drawing -----------------------------------------------------------------------------------------------------


class _Canvas:
    """The film's two canvases: a smooth field (about FIELD_MM per pixel) for soft tissue, air and findings, and
    the film itself for bones; and the map from the patient's millimetres to each."""

    def __init__(self, shape: tuple[int, int], to_px: ImageTransform):
        self.shape = shape
        self.to_px = to_px
        self.factor = max(1, int(round(FIELD_MM * to_px.px_per_mm)))
        self.field_shape = (-(-shape[0] // self.factor), -(-shape[1] // self.factor))
        self.field_px_per_mm = to_px.px_per_mm / self.factor

    def field(self, points_mm: np.ndarray) -> np.ndarray:
        """Millimetres to field pixels (pixel centres at integers, as in the film)."""
        return (self.to_px(points_mm) + 0.5) / self.factor - 0.5

    def zeros(self) -> np.ndarray:
        return np.zeros(self.field_shape, np.float32)

    def mask(self, polygon_mm: np.ndarray) -> np.ndarray:
        """A filled polygon in the field, float32 0..1 (anti-aliased)."""
        mask = np.zeros(self.field_shape, np.uint8)
        pts = np.round(self.field(polygon_mm) * (1 << render.SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, render.SHIFT)
        return mask.astype(np.float32) * (1.0 / 255.0)

    def line(self, layer: np.ndarray, curve_mm: np.ndarray, width_mm: float, value: float) -> None:
        """A polyline of constant width and density into a field layer (overwrites, so crossings do not add)."""
        pts = np.round(self.field(curve_mm) * (1 << render.SHIFT)).astype(np.int32)
        thickness = max(1, int(round(width_mm * self.field_px_per_mm)))
        cv2.polylines(layer, [pts], False, float(value), thickness, cv2.LINE_AA, render.SHIFT)

    def blur(self, layer: np.ndarray, mm: float) -> np.ndarray:
        sigma = mm * self.field_px_per_mm
        return cv2.GaussianBlur(layer, (0, 0), sigma) if sigma > 0.3 else layer

    def box_of_layer(self, layer: np.ndarray, fraction: float = 0.03) -> tuple[int, int, int, int] | None:
        """Film-pixel box around where a field layer is at least `fraction` of its peak."""
        peak = float(np.abs(layer).max())
        if peak <= 0:
            return None
        rows = np.flatnonzero((np.abs(layer) >= fraction * peak).any(axis=1))
        cols = np.flatnonzero((np.abs(layer) >= fraction * peak).any(axis=0))
        f = self.factor
        return self._clip(cols[0] * f, rows[0] * f, (cols[-1] + 1) * f, (rows[-1] + 1) * f)

    def box_of_points(self, points_mm: np.ndarray, margin_mm: float) -> tuple[int, int, int, int] | None:
        """Film-pixel box around points, widened by a margin."""
        px = self.to_px(np.asarray(points_mm, dtype=np.float64).reshape(-1, 2))
        m = margin_mm * self.to_px.px_per_mm
        return self._clip(px[:, 0].min() - m, px[:, 1].min() - m, px[:, 0].max() + m + 1, px[:, 1].max() + m + 1)

    def _clip(self, x0, y0, x1, y1) -> tuple[int, int, int, int] | None:
        # Padded by what the detector's blur and the field's pixels spread a drawn edge over.
        pad = BOX_PAD_PX + self.factor
        x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
        h, w = self.shape
        box = (max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0), min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h))
        return box if box[2] > box[0] and box[3] > box[1] else None


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field of `shape`, features about `cell_px` across."""
    h, w = shape
    coarse = rng.standard_normal((max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _draw_bone(canvas: np.ndarray, polygon_px: np.ndarray, px_per_mm: float, look: render.BoneLook, offset) -> None:
    """`render.draw_bone` with the trabecular texture fixed to film coordinates (`offset` per bone).

    Two fragments of a broken rib then show the texture the whole rib would have shown, so a fracture changes the
    film at the break only.
    """
    x0 = max(int(np.floor(polygon_px[:, 0].min())) - 3, 0)
    y0 = max(int(np.floor(polygon_px[:, 1].min())) - 3, 0)
    x1 = min(int(np.ceil(polygon_px[:, 0].max())) + 3, canvas.shape[1])
    y1 = min(int(np.ceil(polygon_px[:, 1].max())) + 3, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    h, w = y1 - y0, x1 - x0
    mask = np.zeros((h, w), np.uint8)
    pts = np.round((polygon_px - (x0, y0)) * (1 << render.SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, render.SHIFT)
    dist = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)
    c = max(look.cortex_mm * px_per_mm, 1.5)
    cortex = np.minimum(dist / c, 1.0) * np.exp(-np.maximum(dist - c, 0.0) / (0.9 * c))
    medulla = 1.0 - np.exp(-dist / (1.5 * c))
    tex = render.trabecular_texture()
    size = render.TEXTURE_SIZE
    rows = (offset[0] + y0 + np.arange(h)) % size
    cols = (offset[1] + x0 + np.arange(w)) % size
    density = look.cortex * cortex + look.medulla * medulla * (1.0 + look.texture * tex[np.ix_(rows, cols)])
    canvas[y0:y1, x0:x1] += (density * (mask.astype(np.float32) * (1.0 / 255.0))).astype(np.float32)


def _look(rng: np.random.Generator, scale: float = 1.0) -> render.BoneLook:
    return render.BoneLook(
        cortex=rng.uniform(0.85, 1.15) * scale,
        medulla=rng.uniform(0.22, 0.36) * scale,
        cortex_mm=rng.uniform(1.2, 2.0),
        texture=rng.uniform(0.15, 0.3),
    )


@dataclass
class _Bone:
    curve: np.ndarray  # centre line (mm), or the outline itself when `closed`
    half_width: np.ndarray | float
    look: render.BoneLook
    offset: tuple[int, int]
    closed: bool = False
    name: str = ""


def _rib_curves(thorax: Thorax, rng: np.random.Generator, side: int) -> tuple[list, list]:
    """Posterior ribs (ten) and anterior ribs (seven) of one side: centre lines in mm."""
    spacing = rng.uniform(22.0, 25.5)
    posterior, anterior = [], []
    t = np.linspace(0.0, 1.0, 240)  # dense: a fracture cuts a rib between its own points (`_break`)
    for k in range(10):
        y0 = thorax.apex_y + 8.0 - k * spacing
        reach = float(thorax.lateral(y0 - 18.0)) + 2.0
        x = 14.0 + (reach - 14.0) * np.sin(0.5 * np.pi * t) ** 0.85
        y = y0 + 6.0 * np.sin(np.pi * t) - 22.0 * t**3
        posterior.append(np.stack([side * x, y], axis=1))
        if k < 7:
            end_y = y[-1]
            s = np.linspace(0.0, 1.0, 32)
            ax = reach - (reach - 38.0) * s
            ay = end_y - 38.0 * s + 10.0 * np.sin(np.pi * s)
            anterior.append(np.stack([side * ax, ay], axis=1))
    return posterior, anterior


def _break(curve: np.ndarray, widths: np.ndarray, at: float, gap_mm: float, shift: np.ndarray, reach_mm: float):
    """A bone's centre line broken at fraction `at` of its length: two fragments (points and half-widths) with a
    gap, the far fragment shifted by `shift` (mm) at the break, the shift fading over `reach_mm` along it. The
    fragments are subsets of the bone's own points, so away from the break they outline it exactly. Returns the
    fragments and the break point."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    s_break = at * s[-1]
    point = curve[int(np.argmin(np.abs(s - s_break)))]
    near = s <= s_break - gap_mm / 2
    far = s >= s_break + gap_mm / 2
    fade = np.clip(1.0 - (s[far] - s_break) / reach_mm, 0.0, 1.0)[:, None]
    return [(curve[near], widths[near]), (curve[far] + fade * shift, widths[far])], point


def _vessel_tree(rng: np.random.Generator, hilum: np.ndarray, side: int) -> list[tuple[np.ndarray, float]]:
    """Pulmonary vessels branching out of one hilum: (segment end points, width mm); a fixed number of draws."""
    segments = []
    roots = ((0.45, 1.0, 36.0, 6.5), (1.0, 0.25, 30.0, 6.0), (0.8, -0.5, 32.0, 6.5), (0.35, -1.0, 40.0, 7.0))

    def branch(start, direction, length, width, depth):
        jitter = rng.normal(0.0, 0.18)
        c, s = np.cos(jitter), np.sin(jitter)
        direction = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]])
        end = start + direction * length * rng.uniform(0.8, 1.2)
        segments.append((np.stack([start, end]), width))
        if depth == 0:
            return
        spread = rng.uniform(0.3, 0.6)
        for sign in (-1.0, 1.0):
            a = sign * spread
            c, s = np.cos(a), np.sin(a)
            child = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]])
            branch(end, child, length * 0.74, width * 0.66, depth - 1)

    for dx, dy, length, width in roots:
        direction = np.array([side * dx, dy])
        branch(hilum, direction / np.linalg.norm(direction), length, width, 4)
    return segments


# --- the findings --------------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """Everything drawn on one film before it is exposed. Findings are placed on `base`, the anatomy before any
    finding changed it, so one finding never moves another."""

    canvas: _Canvas
    base: Thorax
    lung: np.ndarray  # field mask of the lungs as drawn (0..1)
    lung_side: dict[int, np.ndarray]
    air: float  # how much darker aerated lung is than soft tissue
    additions: list[np.ndarray] = field(default_factory=list)  # field layers added to the attenuation
    findings: list[Finding] = field(default_factory=list)

    def add(self, label: str, layer: np.ndarray | None, boxes: Sequence, sign: str) -> None:
        if layer is not None:
            self.additions.append(layer)
        boxes = [box for box in boxes if box is not None]
        if boxes:
            self.findings.append(Finding(label, boxes, sign))

    def point_in_lung(self, rng: np.random.Generator, margin_mm: float, side: int | None = None) -> np.ndarray:
        """A random point (mm) at least `margin_mm` inside a lung of the base anatomy (of `side` when given)."""
        mediastinum = self.base.mediastinum_outline().astype(np.float32)
        for _ in range(200):
            s = side if side is not None else (-1 if rng.random() < 0.5 else 1)
            point = (float(s * rng.uniform(10.0, self.base.half_width)),
                     float(rng.uniform(self.base.costophrenic_y, self.base.apex_y)))  # fmt: skip
            inside = cv2.pointPolygonTest(self.base.cavity(s).astype(np.float32), point, True)
            outside = -cv2.pointPolygonTest(mediastinum, point, True)
            if inside >= margin_mm and outside >= margin_mm:
                return np.array(point)
        return np.array(point)


def _opacity(scene: _Scene, rng: np.random.Generator) -> None:
    """Lung Opacity: ill-defined patchy haze; vessels show through it."""
    c = scene.canvas
    boxes, total = [], c.zeros()
    for _ in range(int(rng.integers(1, 4))):
        center = scene.point_in_lung(rng, 20.0)
        axes = rng.uniform(25.0, 45.0, 2)
        blob = c.mask(ellipse_outline(tuple(center), tuple(axes), rng.uniform(0, 180)))
        patchy = np.clip(0.6 + 0.4 * _smooth_noise(rng, c.field_shape, 10.0 * c.field_px_per_mm), 0.0, 1.0)
        layer = c.blur(blob * patchy, 6.0) * scene.lung * rng.uniform(0.36, 0.5)
        boxes.append(c.box_of_layer(layer))
        total += layer
    scene.add("Lung Opacity", total, boxes, f"{len(boxes)} ill-defined patchy opacities")


def _lesion(scene: _Scene, rng: np.random.Generator) -> None:
    """Lung Lesion: sharply marginated round nodules, or a lobulated mass."""
    c = scene.canvas
    mass = rng.random() < 0.35
    count = 1 if mass or rng.random() < 0.7 else 2
    boxes, sizes, total = [], [], c.zeros()
    for _ in range(count):
        radius = rng.uniform(15.0, 27.0) if mass else rng.uniform(7.5, 15.0)
        center = scene.point_in_lung(rng, radius + 4.0)
        theta = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
        lobes = 1.0 + (0.12 if mass else 0.05) * np.sin(theta * rng.integers(3, 6) + rng.uniform(0, 6.3))
        outline = center + np.stack([np.cos(theta), np.sin(theta)], axis=1) * (radius * lobes)[:, None]
        disc = c.mask(outline)
        # A sphere projects thicker at its centre.
        dist = cv2.distanceTransform((disc > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / c.field_px_per_mm
        profile = np.sqrt(np.clip(dist / radius, 0.0, 1.0))
        layer = c.blur(disc * (0.55 + 0.45 * profile), 0.6) * rng.uniform(0.55, 0.8)
        total = np.maximum(total, layer)
        boxes.append(c.box_of_points(outline, 1.5))
        sizes.append(2 * radius)
    kind = "mass" if mass else "nodule" if count == 1 else "nodules"
    scene.add("Lung Lesion", total, boxes, f"{kind} {', '.join(f'{d:.0f} mm' for d in sizes)}, sharply marginated")


def _edema(scene: _Scene, rng: np.random.Generator) -> None:
    """Edema: bilateral perihilar haze and Kerley B lines at both bases."""
    c, th = scene.canvas, scene.base
    total, boxes = c.zeros(), []
    for side in (-1, 1):
        hilum = np.array([side * (th.border(side, th.carina_y - 15.0) + 18.0), th.carina_y - 25.0])
        axes = (rng.uniform(38.0, 52.0), rng.uniform(55.0, 75.0))
        blob = c.mask(ellipse_outline(tuple(hilum + (side * 12.0, 0.0)), axes, side * rng.uniform(0, 20)))
        patchy = np.clip(0.7 + 0.3 * _smooth_noise(rng, c.field_shape, 10.0 * c.field_px_per_mm), 0.0, 1.0)
        haze = c.blur(blob * patchy, 12.0) * scene.lung_side[side] * rng.uniform(0.36, 0.5)
        boxes.append(c.box_of_layer(haze))
        lines = c.zeros()
        kerley = []
        for _ in range(int(rng.integers(5, 10))):
            y = th.costophrenic_y + rng.uniform(18.0, 75.0)
            wall = float(th.lateral(y)) - 1.0
            length = rng.uniform(10.0, 20.0)
            segment = np.array([[side * wall, y], [side * (wall - length), y + rng.normal(0, 1.5)]])
            c.line(lines, segment, rng.uniform(1.0, 1.5), rng.uniform(0.3, 0.45))
            kerley.append(segment)
        lines = c.blur(lines, 0.4) * scene.lung_side[side]
        boxes.append(c.box_of_layer(lines, 0.05))
        total += haze + lines
    scene.add("Edema", total, boxes, "bilateral perihilar haze, Kerley B lines at both bases")


LOBES = ("right upper", "right middle", "right lower", "left upper (lingula)", "left lower")


def _consolidation(scene: _Scene, rng: np.random.Generator) -> None:
    """Consolidation: a dense homogeneous lobar opacity with air bronchograms."""
    c, th = scene.canvas, scene.base
    lobe = LOBES[int(rng.integers(len(LOBES)))]
    side = -1 if lobe.startswith("right") else 1
    fissure = th.carina_y - rng.uniform(15.0, 30.0)
    big = 400.0
    border = float(th.border(side, fissure - 40.0))
    if lobe == "right upper":  # bounded below by the horizontal fissure: a sharp straight edge
        region = np.array([[-big, fissure], [0.0, fissure + 6.0], [0.0, big], [-big, big]])
        soft = 1.0
    elif lobe in ("right middle", "left upper (lingula)"):  # against the heart border: it is lost (silhouette)
        reach = border + rng.uniform(45.0, 65.0)
        region = np.array([[0.0, fissure], [side * reach, fissure - 5.0], [side * reach, -big], [0.0, -big]])
        soft = 4.0
    else:  # lower lobe: over the hemidiaphragm, whose outline is lost
        top = th.dome_y[side > 0] + rng.uniform(45.0, 75.0)
        region = np.array([[0.0, top], [side * big, top + 10.0], [side * big, -big], [0.0, -big]])
        soft = 6.0
    mask = c.blur(c.mask(region), soft) * scene.lung_side[side]
    density = rng.uniform(0.5, 0.68) * np.clip(0.92 + 0.08 * _smooth_noise(rng, c.field_shape, 8.0), 0.0, 1.0)
    layer = mask * density
    # Air bronchograms: aerated bronchi seen as dark branches inside the opacity.
    bronchi = c.zeros()
    start = np.array([side * (th.border(side, th.carina_y - 20.0) + 5.0), th.carina_y - 20.0])
    target = scene.point_in_lung(rng, 5.0, side)
    for _ in range(3):
        end = target + rng.normal(0.0, 15.0, 2)
        mid = (start + end) / 2 + rng.normal(0.0, 6.0, 2)
        c.line(bronchi, np.stack([start, mid, end]), rng.uniform(2.0, 3.0), 1.0)
    layer -= c.blur(bronchi, 0.5) * mask * density * 0.55
    scene.add("Consolidation", layer, [c.box_of_layer(layer)], f"{lobe} lobe consolidation, air bronchograms")


def _atelectasis(scene: _Scene, rng: np.random.Generator, thorax: Thorax, side: int) -> None:
    """Atelectasis: plate-like bands in a lower zone; the raised hemidiaphragm is drawn with the lungs."""
    c = scene.canvas
    bands = c.zeros()
    for _ in range(int(rng.integers(1, 4))):
        y = thorax.dome_y[side > 0] + rng.uniform(15.0, 70.0)
        wall = float(thorax.lateral(y))
        x0 = rng.uniform(0.35, 0.6) * wall
        length = rng.uniform(40.0, 75.0)
        tilt = rng.uniform(-0.25, 0.25) * length
        c.line(bands, np.array([[side * x0, y], [side * min(x0 + length, wall - 5.0), y + tilt]]),
               rng.uniform(3.5, 6.0), rng.uniform(0.5, 0.7))  # fmt: skip
    bands = c.blur(bands, 1.0) * scene.lung_side[side]
    scene.additions.append(bands)
    # The lung base the raised dome took: between the normal and the raised hemidiaphragm.
    lateral = float(thorax.lateral(thorax.costophrenic_y))
    us = np.linspace(10.0, lateral, 24)
    raised = thorax.diaphragm(side, us)
    normal = thorax.diaphragm(side, us, thorax.normal_dome_y[side > 0])
    band = np.concatenate([np.stack([side * us, raised], 1), np.stack([side * us, normal], 1)])
    boxes = [c.box_of_layer(bands, 0.05), c.box_of_points(band, 8.0)]
    lift = thorax.dome_y[side > 0] - thorax.normal_dome_y[side > 0]
    scene.findings.append(
        Finding("Atelectasis", [b for b in boxes if b is not None],
                f"{'right' if side < 0 else 'left'} basal plate-like atelectasis, hemidiaphragm raised {lift:.0f} mm")
    )  # fmt: skip


def _effusion(scene: _Scene, rng: np.random.Generator) -> None:
    """Pleural Effusion: fluid at the base, its meniscus rising laterally; the costophrenic angle and the
    hemidiaphragm lost in it."""
    c, th = scene.canvas, scene.base
    sides = (-1, 1) if rng.random() < 0.4 else ((-1,) if rng.random() < 0.55 else (1,))
    total, boxes, heights = c.zeros(), [], []
    for side in sides:
        height = rng.uniform(28.0, 90.0)
        lateral = float(th.lateral(th.costophrenic_y))
        us = np.linspace(0.0, lateral + 30.0, 40)
        meniscus = th.costophrenic_y + height * (0.3 + 0.7 * np.clip(us / lateral, 0, 1) ** 1.6)
        below = np.concatenate([np.stack([side * us, meniscus], 1), [[side * (lateral + 30.0), -400.0], [0.0, -400.0]]])
        fluid = c.blur(c.mask(below), rng.uniform(3.0, 6.0))
        # Fluid takes the place of aerated lung: it cancels the air and adds a little density.
        layer = fluid * scene.lung_side[side] * (scene.air + rng.uniform(0.05, 0.15))
        total += layer
        boxes.append(c.box_of_layer(layer))
        heights.append(height)
    where = "bilateral" if len(sides) == 2 else "right" if sides[0] < 0 else "left"
    scene.add("Pleural Effusion", total, boxes,
              f"{where} effusion, meniscus {', '.join(f'{h:.0f}' for h in heights)} mm above the costophrenic angle")  # fmt: skip


def _pleural_other(scene: _Scene, rng: np.random.Generator) -> None:
    """Pleural Other: calcified pleural plaques, in profile along the chest wall and the diaphragm, and en face."""
    c, th = scene.canvas, scene.base
    total, boxes = c.zeros(), []
    sides = (-1, 1) if rng.random() < 0.6 else ((-1,) if rng.random() < 0.5 else (1,))
    for side in sides:
        for _ in range(int(rng.integers(1, 3))):  # in profile along the lateral wall
            y0 = rng.uniform(th.costophrenic_y + 35.0, th.widest_y + 55.0)
            ys = np.linspace(y0, y0 + rng.uniform(25.0, 50.0), 12)
            curve = np.stack([side * (th.lateral(ys) - 2.5), ys], 1)
            layer = c.zeros()
            c.line(layer, curve, rng.uniform(3.0, 5.0), rng.uniform(0.9, 1.3))
            layer = c.blur(layer, 0.5)
            total = np.maximum(total, layer)
            boxes.append(c.box_of_points(curve, 3.0))
        if rng.random() < 0.6:  # on the dome of the hemidiaphragm
            lateral = float(th.lateral(th.costophrenic_y))
            us = np.linspace(0.3, 0.65, 10) * lateral
            curve = np.stack([side * us, th.diaphragm(side, us) + 2.0], 1)
            layer = c.zeros()
            c.line(layer, curve, rng.uniform(3.0, 4.5), rng.uniform(0.9, 1.3))
            total = np.maximum(total, c.blur(layer, 0.5))
            boxes.append(c.box_of_points(curve, 3.0))
        # En face: an irregular "holly leaf" plaque over the lung.
        center = scene.point_in_lung(rng, 25.0, side)
        theta = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
        radius = rng.uniform(13.0, 20.0) * (1.0 + 0.35 * rng.uniform(-1, 1, 40))
        outline = center + np.stack([np.cos(theta), np.sin(theta)], 1) * radius[:, None] * (1.0, 0.6)
        plaque = c.mask(outline)
        rim = plaque - cv2.erode(plaque, None, iterations=2)
        layer = c.blur(plaque * rng.uniform(0.25, 0.35) + rim * 0.35, 0.5)
        total = np.maximum(total, layer)
        boxes.append(c.box_of_points(outline, 2.0))
    scene.add("Pleural Other", total, boxes, f"calcified pleural plaques, {len(boxes)} seen")


def _pneumothorax(scene: _Scene, rng: np.random.Generator, side: int) -> tuple[np.ndarray, Finding]:
    """Pneumothorax: the pleural space between the chest wall and the collapsed lung's visceral pleural line.
    Returns the space's field mask (the lungs are drawn without markings there) and the finding."""
    c, th = scene.canvas, scene.base
    rim = rng.uniform(15.0, 45.0)  # at the apex
    lowest = rng.uniform(th.costophrenic_y + 20.0, th.widest_y)
    ys = np.linspace(th.apex_y + 2.0, lowest, 40)
    t = (ys - lowest) / (th.apex_y - lowest)  # 1 at the apex, 0 at the lowest point of the line
    width = rim * np.clip(t, 0.0, 1.0) ** 0.6
    wall = np.stack([side * th.lateral(ys), ys], 1)
    line = np.stack([side * (th.lateral(ys) - width), ys - width * 0.5 * t], 1)
    apex = np.array([[side * 6.0, th.apex_y + 15.0]])
    space = c.mask(np.concatenate([apex, wall * (1.0, 1.0) + (side * 8.0, 0.0), line[::-1]]))
    space *= scene.lung_side[side] > 0.02
    pleura = c.zeros()
    c.line(pleura, line, rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.42))
    scene.additions.append(c.blur(pleura, 0.4) * np.clip(3.0 * scene.lung_side[side], 0.0, 1.0))
    box = c.box_of_points(np.concatenate([wall, line]), 4.0)
    finding = Finding(
        "Pneumothorax", [box] if box else [],
        f"{'right' if side < 0 else 'left'} pneumothorax, pleural line {rim:.0f} mm from the apex, no markings beyond",
    )  # fmt: skip
    return space, finding


def _devices(scene: _Scene, rng: np.random.Generator) -> None:
    """Support Devices: tubes, lines, a pacemaker, sternotomy wires, ECG electrodes."""
    c, th = scene.canvas, scene.base
    kinds = ("endotracheal tube", "nasogastric tube", "central line", "pacemaker", "sternotomy wires", "ECG leads")
    count = 1 + int(rng.random() < 0.45) + int(rng.random() < 0.15)
    chosen = rng.choice(len(kinds), size=count, replace=False)
    total, boxes, names = c.zeros(), [], []
    clavicle_y = th.apex_y - 12.0
    for i in sorted(int(k) for k in chosen):
        layer = c.zeros()
        kind = kinds[i]
        if kind == "endotracheal tube":
            tip = th.carina_y + rng.uniform(30.0, 60.0)
            x = th.trachea_x + rng.uniform(-2.0, 2.0)
            path = np.array([[x + 6.0, 330.0], [x + 2.0, 240.0], [x, tip]])
            c.line(layer, path, 8.0, 0.18)  # the tube's wall
            c.line(layer, path, 1.8, 1.5)  # its radio-opaque stripe
        elif kind == "nasogastric tube":
            stomach = np.array([0.45 * th.half_width, th.normal_dome_y[1] - rng.uniform(35.0, 55.0)])
            path = np.array([[6.0, 330.0], [4.0, th.carina_y], [12.0, th.normal_dome_y[1] + 10.0],
                             [25.0, th.normal_dome_y[1] - 25.0], stomach])  # fmt: skip
            c.line(layer, _smooth(path), 1.8, 1.3)
        elif kind == "central line":
            side = -1 if rng.random() < 0.7 else 1
            tip = np.array([-22.0, th.heart_top + rng.uniform(-20.0, 10.0)])
            path = np.array([[side * (th.half_width + 40.0), clavicle_y - 5.0],
                             [side * 60.0, clavicle_y - 22.0], [-20.0 if side < 0 else 10.0, clavicle_y - 40.0], tip])  # fmt: skip
            c.line(layer, _smooth(path), 1.8, 1.3)
        elif kind == "pacemaker":
            side = 1 if rng.random() < 0.8 else -1
            center = np.array([side * rng.uniform(0.5, 0.7) * th.half_width, clavicle_y - rng.uniform(25.0, 40.0)])
            can = c.mask(_rounded_rect(center, (24.0, 20.0), rng.uniform(-25, 25)))
            battery = c.mask(ellipse_outline(tuple(center + (0.0, -4.0)), (15.0, 9.0), 0.0))
            layer += c.blur(can * 1.6 + battery * 0.5, 0.4)
            for end in ((-28.0, th.heart_top - 35.0), (0.4 * th.heart[1], th.normal_dome_y[1] + 25.0))[
                : 1 + int(rng.random() < 0.7)
            ]:
                path = np.array([center, [side * 40.0, clavicle_y - 15.0], [-15.0, th.heart_top + 20.0], end])
                c.line(layer, _smooth(path), 1.6, 1.5)
                c.line(layer, np.array([end, np.array(end) + (4.0, -4.0)]), 3.0, 1.3)  # the lead's tip
        elif kind == "sternotomy wires":
            for k in range(int(rng.integers(4, 7))):
                y = th.heart_top + 55.0 - k * rng.uniform(17.0, 22.0)
                loop = ellipse_outline((rng.normal(0.0, 2.0), y), (6.0, 3.5), rng.uniform(-20, 20), samples=24)
                c.line(layer, np.concatenate([loop, loop[:1]]), 1.5, 2.0)
        else:  # ECG electrodes with their leads
            for _ in range(int(rng.integers(2, 5))):
                center = np.array([rng.uniform(-1, 1) * th.half_width * 0.9, rng.uniform(th.costophrenic_y, th.apex_y)])
                ring = ellipse_outline(tuple(center), (7.0, 7.0), 0.0, samples=24)
                c.line(layer, np.concatenate([ring, ring[:1]]), 1.4, 0.6)
                c.line(layer, np.array([center, center + (0.5, 0.0)]), 4.0, 1.6)
                out = center + np.array([np.sign(center[0] + 1e-3) * 220.0, rng.uniform(-60, 60)])
                c.line(layer, _smooth(np.array([center, (center + out) / 2 + rng.normal(0, 20, 2), out])), 1.0, 0.6)
        layer = c.blur(layer, 0.3)
        boxes.append(c.box_of_layer(layer, 0.05))
        names.append(kind)
        total = np.maximum(total, layer)
    scene.add("Support Devices", total, boxes, ", ".join(names))


def _smooth(path: np.ndarray) -> np.ndarray:
    """A smooth curve through a few points (quadratic B-spline by repeated corner cutting)."""
    pts = np.asarray(path, dtype=np.float64)
    for _ in range(4):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.concatenate([pts[:1], np.stack([q, r], 1).reshape(-1, 2), pts[-1:]])
    return pts


def _rounded_rect(center: np.ndarray, half: tuple[float, float], angle_deg: float) -> np.ndarray:
    theta = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    squircle = np.stack([np.sign(c) * np.abs(c) ** 0.4 * half[0], np.sign(s) * np.abs(s) ** 0.4 * half[1]], 1)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return squircle @ rot.T + center


# --- the film ----------------------------------------------------------------------------------------------------


def render_chest_film(
    geometry: np.random.Generator,
    texture: np.random.Generator,
    finding_streams: np.random.Generator,
    shape: tuple[int, int],
    mm_per_px: float,
    present: Collection[str] = (),
    distribution: str | None = None,
) -> ChestFilm:
    """A chest PA film showing `present` findings (labels of `CHEST_FINDINGS`; No Finding and the labels in
    `NOT_DRAWN` draw nothing).

    Args:
        geometry: The anatomy, pose, exposure and marker (a fixed number of draws whatever the findings).
        texture: Bone texture offsets and detector noise (a fixed number of draws).
        finding_streams: Drawn once, to seed one stream per label: a finding's look never depends on another's.
        shape: Film rows and columns.
        mm_per_px: Detector pixel spacing.
        present: The findings to draw.
        distribution: Recorded on the film (which prevalence drew its labels).
    """
    label_vector(present)  # checks the names
    wanted = set(present) - {NO_FINDING, *NOT_DRAWN}
    seeds = np.random.SeedSequence(int(finding_streams.integers(2**63))).spawn(len(CHEST_FINDINGS))
    streams = {label: np.random.default_rng(seed) for label, seed in zip(CHEST_FINDINGS, seeds, strict=True)}

    # The anatomy, pose and exposure: every draw made whatever the findings.
    h, w = shape
    to_px = ImageTransform.make(
        mm_per_px, geometry.uniform(0.9, 1.06), geometry.uniform(-4.0, 4.0),
        (w * geometry.uniform(0.46, 0.54), h * geometry.uniform(0.42, 0.5)),
    )  # fmt: skip
    base = _draw_thorax(geometry)
    body_thickness = geometry.uniform(1.0, 1.3)
    air = geometry.uniform(0.7, 0.92)
    heart_density = geometry.uniform(0.08, 0.18)
    trachea_air = geometry.uniform(0.22, 0.32)
    bubble = (geometry.uniform(18.0, 32.0), geometry.uniform(10.0, 18.0), geometry.uniform(0.15, 0.35))
    vessel_gain = geometry.uniform(0.06, 0.085)
    hila = {side: np.array([side * (base.border(side, base.carina_y - 15.0) + 8.0), base.carina_y - 18.0])
            for side in (-1, 1)}  # fmt: skip
    vessels = {side: _vessel_tree(geometry, hila[side], side) for side in (-1, 1)}
    rib_curves = {side: _rib_curves(base, geometry, side) for side in (-1, 1)}
    looks = {"rib": _look(geometry, 0.5), "anterior": _look(geometry, 0.22), "clavicle": _look(geometry, 0.8),
             "spine": _look(geometry, 0.35), "humerus": _look(geometry, 1.0)}  # fmt: skip
    clavicle_rise = geometry.uniform(14.0, 26.0)
    marker = (geometry.random() < 0.7, "R" if geometry.random() < 0.5 else "L", geometry.uniform(0.05, 0.85, 3))
    exposure = render.Exposure.random(geometry, shape)
    canvas = _Canvas(shape, to_px)

    # Findings that change the anatomy itself.
    thorax = base
    findings: list[Finding] = []
    if "Cardiomegaly" in wanted:
        thorax = _with_ctr(thorax, streams["Cardiomegaly"].uniform(0.56, 0.68))
        box = canvas.box_of_points(thorax.heart_outline(), 4.0)
        findings.append(Finding("Cardiomegaly", [box], f"cardiothoracic ratio {thorax.cardiothoracic_ratio():.2f}"))
    if "Enlarged Cardiomediastinum" in wanted:
        rng = streams["Enlarged Cardiomediastinum"]
        thorax = _with_upper_mediastinum(thorax, rng.uniform(95.0, 125.0), rng.uniform(0.35, 0.65))
        ys = np.linspace(thorax.heart_top, thorax.apex_y + 10.0, 40)
        outline = np.concatenate([np.stack([-thorax.border(-1, ys), ys], 1), np.stack([thorax.border(1, ys), ys], 1)])
        findings.append(Finding("Enlarged Cardiomediastinum", [canvas.box_of_points(outline, 4.0)],
                                f"upper mediastinum {thorax.upper_mediastinum_mm():.0f} mm wide"))  # fmt: skip
    atelectasis_side = None
    if "Atelectasis" in wanted:
        atelectasis_side = -1 if streams["Atelectasis"].random() < 0.5 else 1
        domes = list(thorax.dome_y)
        domes[atelectasis_side > 0] += streams["Atelectasis"].uniform(14.0, 26.0)
        thorax = dataclasses.replace(thorax, dome_y=tuple(domes))

    # Soft tissue: neck, shoulders, trunk.
    W = base.half_width
    body = np.array([(-55.0, 400.0), (55.0, 400.0), (60.0, 215.0), (W + 75.0, 185.0), (W + 95.0, 120.0),
                     (W + 45.0, 40.0), (W + 40.0, -400.0), (-W - 40.0, -400.0), (-W - 45.0, 40.0),
                     (-W - 95.0, 120.0), (-W - 75.0, 185.0), (-60.0, 215.0)])  # fmt: skip

    def draw_body(mask, k):
        poly = np.round(canvas.field(body) * k * 16).astype(np.int32)
        cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA, 4)

    attenuation = render.soft_tissue(
        canvas.field_shape, draw_body, canvas.field_px_per_mm, body_thickness, smooth_mm=25.0, factor=2
    )

    # Lungs: the hemithoraces less the mediastinum and heart, edges softened as a curved surface projects.
    mediastinum = canvas.mask(thorax.mediastinum_outline())
    lung_side = {side: canvas.blur(canvas.mask(thorax.cavity(side)) * (1.0 - mediastinum), 2.0) for side in (-1, 1)}
    lung = lung_side[-1] + lung_side[1]
    scene = _Scene(canvas, base, lung, lung_side, air, findings=findings)

    space = canvas.zeros()
    if "Pneumothorax" in wanted:
        rng = streams["Pneumothorax"]
        space, finding = _pneumothorax(scene, rng, -1 if rng.random() < 0.5 else 1)
        if finding.boxes:
            scene.findings.append(finding)
    attenuation -= lung * air + canvas.blur(space, 1.0) * PNEUMOTHORAX_AIR
    attenuation += canvas.blur(canvas.mask(thorax.heart_outline()), 3.0) * heart_density

    # The trachea and main bronchi, and the gastric bubble under the left hemidiaphragm.
    airway = canvas.zeros()
    carina = np.array([base.trachea_x, base.carina_y])
    canvas.line(airway, np.array([[base.trachea_x, 330.0], carina]), 17.0, 1.0)
    for side in (-1, 1):
        canvas.line(airway, np.array([carina, carina + (side * 38.0, -28.0)]), 11.0, 1.0)
    attenuation -= canvas.blur(airway, 2.0) * np.clip(1.0 - lung, 0.0, 1.0) * trachea_air
    stomach = (0.45 * W, base.normal_dome_y[1] - bubble[1] - 8.0)
    attenuation -= canvas.blur(canvas.mask(ellipse_outline(stomach, bubble[:2], 0.0)), 2.0) * bubble[2]

    # Vessels, only where there is aerated lung.
    layer = canvas.zeros()
    for side in (-1, 1):
        for segment, width in sorted(vessels[side], key=lambda sw: -sw[1]):
            canvas.line(layer, segment, max(width, 0.8), min(vessel_gain * width, 0.5))
    attenuation += canvas.blur(layer, 0.5) * lung * (1.0 - space)

    # Findings drawn on the field.
    for label, draw in (("Lung Opacity", _opacity), ("Lung Lesion", _lesion), ("Edema", _edema),
                        ("Consolidation", _consolidation), ("Pleural Effusion", _effusion),
                        ("Pleural Other", _pleural_other), ("Support Devices", _devices)):  # fmt: skip
        if label in wanted:
            draw(scene, streams[label])
    if atelectasis_side is not None:
        _atelectasis(scene, streams["Atelectasis"], thorax, atelectasis_side)
    for addition in scene.additions:
        attenuation += addition

    # Up to the film, then the bones at the film's resolution.
    film = cv2.resize(attenuation, (w, h), interpolation=cv2.INTER_LINEAR)
    bones: list[_Bone] = []
    for side in (-1, 1):
        posterior, anterior = rib_curves[side]
        for k, curve in enumerate(posterior):
            bones.append(
                _Bone(curve, np.linspace(3.0, 4.2, len(curve)), looks["rib"], _offset(texture), name=f"rib{side}{k}")
            )
        for curve in anterior:
            bones.append(_Bone(curve, 5.0, looks["anterior"], _offset(texture)))
        t = np.linspace(0.0, 1.0, 200)
        clavicle = np.stack([side * (16.0 + (W + 30.0) * t),
                             base.apex_y - 12.0 + clavicle_rise * t**1.5 + 5.0 * np.sin(2 * np.pi * t)], 1)  # fmt: skip
        bones.append(
            _Bone(clavicle, np.linspace(8.0, 6.0, len(t)), looks["clavicle"], _offset(texture), name=f"clavicle{side}0")
        )
        head = ellipse_outline((side * (W + 82.0), base.apex_y + 12.0), (27.0, 29.0), 0.0)
        bones.append(_Bone(head, 0.0, looks["humerus"], _offset(texture), closed=True))
    for level in range(16):
        vertebra = ellipse_outline((0.0, base.apex_y + 40.0 - level * 26.0), (17.0, 10.5), 0.0, samples=24)
        bones.append(_Bone(vertebra, 0.0, looks["spine"], _offset(texture), closed=True))
    if "Fracture" in wanted:
        bones, signs = _fracture(scene, streams["Fracture"], bones)
        film += cv2.resize(signs, (w, h), interpolation=cv2.INTER_LINEAR)
    px_per_mm = to_px.px_per_mm
    for bone in bones:
        outline = bone.curve if bone.closed else band_outline(bone.curve, bone.half_width)
        _draw_bone(film, to_px(outline), px_per_mm, bone.look, bone.offset)

    show, letter, where = marker
    if show:
        height = int((0.04 + 0.02 * where[2]) * h)
        render.draw_text(film, letter, (int(where[0] * w), int((0.05 + 0.07 * where[1]) * h)), height, value=3.0)
    image = render.expose(film, exposure, texture)
    order = {label: i for i, label in enumerate(CHEST_FINDINGS)}
    measurements = {
        "cardiothoracic_ratio": round(thorax.cardiothoracic_ratio(), 3),
        "upper_mediastinum_mm": round(thorax.upper_mediastinum_mm(), 1),
        "thorax_mm": round(2 * W, 1),
    }
    findings = sorted((f for f in scene.findings if f.boxes), key=lambda f: order[f.label])
    return ChestFilm(image, findings, measurements, distribution)


def _offset(texture: np.random.Generator) -> tuple[int, int]:
    """Where a bone's texture starts in the trabecular tile (one draw per bone, whatever the findings)."""
    y, x = texture.integers(0, render.TEXTURE_SIZE, 2)
    return int(y), int(x)


def _fracture(scene: _Scene, rng: np.random.Generator, bones: list[_Bone]) -> tuple[list[_Bone], np.ndarray]:
    """Fracture: two or three ribs in a row broken at the same lateral place, either acute (a gap, a step-off and
    an extrapleural hematoma: a lens of blood against the chest wall at the level of the breaks) or healing (a
    fusiform callus around a thin fracture line); or a clavicle broken in its middle third with the lateral
    fragment dropped. Returns the bones, some broken, and the soft-tissue signs (a field layer)."""
    c = scene.canvas
    layer = c.zeros()
    by_name = {bone.name: i for i, bone in enumerate(bones) if bone.name}
    side = -1 if rng.random() < 0.5 else 1
    healing = rng.random() < 0.5
    if rng.random() < 0.2:
        healing = False
        targets = [("clavicle", side, 0, rng.uniform(0.4, 0.6), np.array([0.0, -rng.uniform(7.0, 12.0)]))]
    else:
        first, at = int(rng.integers(2, 8)), rng.uniform(0.5, 0.8)
        step = (1.0, 3.0) if healing else (6.0, 10.0)
        targets = [
            ("rib", side, k, at + rng.normal(0.0, 0.02), rng.uniform(*step) * np.array([-side * 0.5, -1.0]))
            for k in range(first, min(first + int(rng.integers(2, 4)), 10))
        ]
    out = list(bones)
    boxes, broken, points = [], [], []
    for kind, side_, k, at, shift in targets:
        i = by_name[f"{kind}{side_}{k}"]
        bone = bones[i]
        widths = np.broadcast_to(np.asarray(bone.half_width, dtype=np.float64), (len(bone.curve),))
        gap = rng.uniform(1.5, 3.0) if healing else rng.uniform(5.0, 9.0)
        fragments, point = _break(bone.curve, widths, at, gap, shift, FRACTURE_REACH_MM)
        pieces = [_Bone(curve, hw, bone.look, bone.offset) for curve, hw in fragments if len(curve) > 2]
        out[i] = pieces[0]
        out.extend(pieces[1:])
        if healing:  # callus: new bone in a dense spindle around the break
            j = int(np.argmin(np.linalg.norm(bone.curve - point, axis=1)))
            tangent = bone.curve[min(j + 3, len(bone.curve) - 1)] - bone.curve[max(j - 3, 0)]
            angle = float(np.degrees(np.arctan2(tangent[1], tangent[0])))
            half_length = rng.uniform(9.0, 14.0)
            callus = ellipse_outline(tuple(point), (half_length, float(widths[j]) * rng.uniform(2.0, 2.6)), angle)
            layer += c.blur(c.mask(callus), 1.0) * rng.uniform(0.35, 0.5)
        boxes.append(c.box_of_points(np.array([point]), FRACTURE_REACH_MM + 10.0))
        broken.append("clavicle" if kind == "clavicle" else f"rib {k + 1}")
        points.append(point)
    if kind == "rib" and not healing:  # extrapleural hematoma against the lateral wall, at the breaks' level
        y = float(np.mean([p[1] for p in points]))
        thickness, length = rng.uniform(9.0, 15.0), rng.uniform(35.0, 55.0)
        ys = np.linspace(y - length / 2, y + length / 2, 24)
        bulge = thickness * np.sin(np.linspace(0.0, np.pi, 24)) ** 0.7
        wall = scene.base.lateral(ys) + 2.0
        lens = np.concatenate([np.stack([side * wall, ys], 1), np.stack([side * (wall - 2.0 - bulge), ys], 1)[::-1]])
        hematoma = c.blur(c.mask(lens), 1.5) * np.clip(3.0 * scene.lung_side[side], 0.0, 1.0)
        hematoma *= rng.uniform(0.5, 0.7)
        layer += hematoma
        boxes.append(c.box_of_layer(hematoma))
    where = "right" if side < 0 else "left"
    sign = "healing fracture (callus)" if healing else "displaced fracture"
    if kind == "rib" and not healing:
        sign += " with an extrapleural hematoma"
    scene.findings.append(Finding("Fracture", [b for b in boxes if b is not None],
                                  f"{sign} of the {where} {', '.join(broken)}"))  # fmt: skip
    return out, layer


def stored_boxes(boxes: Sequence[Sequence[int]], how: str, height: int, width: int) -> list[list[int]]:
    """Boxes of an upright film moved to where a film stored `how` (`deepxray.phantoms.stored.STORED`) shows them."""
    from deepxray.phantoms.stored import STORED

    quarter_turns, mirrored = STORED[how]
    moved = []
    for x0, y0, x1, y1 in boxes:
        xy = np.array([[x0, y0], [x1 - 1, y1 - 1]], dtype=np.float64)
        if mirrored:
            xy[:, 0] = width - 1 - xy[:, 0]
        w, h = width, height
        for _ in range(quarter_turns):  # one counter-clockwise quarter turn: (x, y) -> (y, w - 1 - x)
            xy = np.stack([xy[:, 1], w - 1 - xy[:, 0]], axis=1)
            w, h = h, w
        moved.append([int(xy[:, 0].min()), int(xy[:, 1].min()), int(xy[:, 0].max()) + 1, int(xy[:, 1].max()) + 1])
    return moved


def stored_record(record: dict, how: str, height: int, width: int) -> dict:
    """A film's findings record (`ChestFilm.record`) with every box where the film stored `how` shows it."""
    regions = []
    for region in record["regions"]:
        boxes = stored_boxes(region["boxes"], how, height, width)
        (box,) = stored_boxes([region["box"]], how, height, width)
        regions.append({**region, "box": box, "boxes": boxes})
    return {**record, "regions": regions}


def render_chest_phantom(
    seed: int,
    index: int,
    distribution: str = "clinical",
    shape: tuple[int, int] | None = None,
    present: Collection[str] | None = None,
    film_scale: float = 1.0,
):
    """Chest film `index` of the set `seed` with findings drawn at `distribution`'s rates (or `present`), as a
    `deepxray.phantoms.phantom.Phantom` whose `extra["findings"]` is the manifest's record.

    It uses the chest class's own random streams (`phantom.streams(seed, index, "chest")`): the geometry and
    texture streams for the film, the otherwise unused "scores" stream for which findings, and "erosion" for
    how they look. `film_scale` < 1 renders a smaller film of the same anatomy (coarser pixels): training renders
    quarter-size films in memory.
    """
    from deepxray.phantoms.phantom import DEFAULT_SHAPE, PIXEL_SPACING_MM, Phantom, streams

    shape = shape or DEFAULT_SHAPE
    rng = streams(seed, index, "chest")
    spacing = float(rng["kind"].uniform(*PIXEL_SPACING_MM["chest"]))
    drawn = draw_labels(rng["scores"], distribution)
    present = drawn if present is None else tuple(present)
    film_shape = (max(16, int(round(shape[0] * film_scale))), max(16, int(round(shape[1] * film_scale))))
    spacing_used = spacing * shape[1] / film_shape[1]
    film = render_chest_film(
        rng["geometry"], rng["texture"], rng["erosion"], film_shape, spacing_used, present, distribution
    )
    return Phantom(film.image, "chest", "chest", None, spacing_used, extra={"findings": film.record()})
