"""`POST /analyze`: the body-part gate routes a film to the hand pipeline or to the chest-findings model.

A film goes through `deepxray.pipeline.score_radiograph` first, as on `/score`: a hand gets the `/score` answer,
unchanged. Where the body-part model refuses it because it sees a chest, with at least `accept_probability`, the
film already decoded (`FilmCapture.pixels`) is normalised as a whole, letterboxed into the chest view and sent to
the chest-findings model; the answer gives the fourteen CheXpert labels' probabilities, the labels above their
thresholds (stored in the model's card and applied by the replica that computed them) and, for each of those, a
coarse heatmap. Any other film is refused exactly as `/score` refuses it.

A chest film is analysed as stored: the chest phantoms the model learnt from are all upright.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deepxray.imaging.model_inputs import NormalisedImage, chest_view
from deepxray.labels import CHEST_FINDINGS, RESEARCH_NOTICE
from deepxray.pipeline import FilmCapture, Models, NotAHandError, Timings, score_radiograph
from deepxray.settings import Settings

CHEST = "chest"
# Side of the heatmap grid in an answer: the model's 32 x 32 map averaged down, enough to show where a finding
# is on a film without making the answer large (14 findings x 256 numbers at most).
HEATMAP_GRID = 16


@dataclass(frozen=True)
class ChestFindingsOutput:
    """What the chest-findings model gives for one view, as its replica computed it."""

    probabilities: np.ndarray  # (14,) in CHEST_FINDINGS order
    thresholds: Sequence[float | None]  # per label; None: a label the model does not report (not drawn)
    heatmaps: np.ndarray  # (14, h, w) class activation maps over the view


@dataclass(frozen=True)
class ChestModel:
    """The chest-findings model as an async callable: (CHEST_VIEW, CHEST_VIEW) view -> its output."""

    analyze: Callable[[np.ndarray], Awaitable[ChestFindingsOutput]]


async def analyze_radiograph(
    data: bytes,
    models: Models,
    chest: ChestModel | None,
    settings: Settings | None = None,
    request_id: str = "",
    timings: Timings | None = None,
    capture: FilmCapture | None = None,
) -> dict:
    """The `/analyze` answer: a hand's `/score` answer, or a chest's findings (`chest` None: chests are refused as
    on `/score`). Raises what `score_radiograph` raises for anything else."""
    settings = settings if settings is not None else Settings()
    capture = capture if capture is not None else FilmCapture()
    try:
        return await score_radiograph(data, models, settings, request_id, timings, capture)
    except NotAHandError as refusal:
        seen = refusal.extra.get("body_part", {})
        if chest is None or seen.get("label") != CHEST or seen.get("probability", 0.0) < settings.accept_probability:
            raise
        body_part = seen
    view = await asyncio.to_thread(lambda: chest_view(NormalisedImage.from_pixels(capture.pixels)))
    output = await chest.analyze(view.pixels)
    return chest_answer(body_part, output, view, models.versions, request_id)


def chest_answer(body_part: dict, output: ChestFindingsOutput, view, versions: dict, request_id: str) -> dict:
    """The chest answer: every label's probability and threshold, the positive ones, and a heatmap for each."""
    findings, positive, heatmaps = [], [], {}
    for label, probability, threshold, heatmap in zip(
        CHEST_FINDINGS, output.probabilities, output.thresholds, output.heatmaps, strict=True
    ):
        is_positive = threshold is not None and float(probability) >= threshold
        findings.append({
            "label": label,
            "probability": round(float(probability), 4),
            "threshold": None if threshold is None else round(float(threshold), 4),
            "positive": is_positive,
        })  # fmt: skip
        if is_positive:
            positive.append(label)
            heatmaps[label] = heatmap_answer(np.asarray(heatmap, np.float32), view)
    return {
        "body_part": {"label": CHEST, "probability": round(float(body_part["probability"]), 4)},
        "findings": findings,
        "positive": positive,
        "heatmaps": heatmaps,
        "models": dict(versions),
        "request_id": request_id,
        "notice": RESEARCH_NOTICE,
    }


def heatmap_answer(heatmap: np.ndarray, view) -> dict:
    """One finding's map: a HEATMAP_GRID-square grid scaled to [0, 1] (1 where the model saw the finding most),
    the part of the film (x0, y0, x1, y1; pixels) the grid covers, and the peak in film pixels."""
    import cv2

    size = view.transform.view_size
    grid = cv2.resize(heatmap, (HEATMAP_GRID, HEATMAP_GRID), interpolation=cv2.INTER_AREA)
    low, high = float(grid.min()), float(grid.max())
    grid = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
    scaled = cv2.resize(heatmap, (size, size), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(scaled)), scaled.shape)
    corners = view.to_image(np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]]))
    return {
        "grid": [[round(float(v), 2) for v in row] for row in grid],
        "box": [round(float(v), 1) for v in corners.ravel()],
        "peak": [round(float(v), 1) for v in view.to_image(np.array([x, y], np.float64))],
    }
