"""Chest films for training the chest-findings model: rendered in memory, prepared as serving prepares them.

The films come from `deepxray.phantoms.chest` (small films, 0.18-0.28 of the 2048x2560 detector, so the view sees
coarser and finer films than it will; a quarter of them JPEG-compressed), at the "balanced" prevalence so the rare
findings have positives to learn from, and pass through the serving preprocessing
(`deepxray.imaging.model_inputs.chest_view`). Each film also gives where its findings are, as cells of the class
activation maps (`region_masks`), for the trainer's localisation term (`deepxray.training.chest_findings`).
This module and `deepxray.training.data` are what `--cache` fingerprints (`deepxray.training.cache`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepxray.imaging.model_inputs import CHEST_VIEW, ChestView, NormalisedImage, chest_view
from deepxray.labels import CHEST_FINDINGS
from deepxray.training.cache import STAMP_KEY, load_or_prepare

CAM_STRIDE = 8  # view pixels per map cell (deepxray.models.chest_findings.CAM_STRIDE; no Keras import here)
CAM_CELLS = CHEST_VIEW // CAM_STRIDE


@dataclass(frozen=True)
class ChestSource:
    """`n` chest films with findings rendered in memory from the set `seed` (`deepxray train chest_findings
    --synthetic N`)."""

    seed: int
    n: int
    distribution: str = "balanced"
    film_scale: tuple[float, float] = (0.18, 0.28)  # of the full 2048x2560 detector, drawn per film
    jpeg_share: float = 0.25

    def jobs(self) -> list[int]:
        return list(range(self.n))

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The view (float16), label vector (int8) and region masks (`region_masks`) of film `index`, the view as
        serving would see the film."""
        from deepxray.phantoms.chest import render_chest_phantom

        rng = np.random.default_rng([self.seed, index, 7031])  # the film's size and compression, apart from it
        scale = float(rng.uniform(*self.film_scale))
        phantom = render_chest_phantom(self.seed, index, self.distribution, film_scale=scale)
        pixels = phantom.image
        if rng.random() < self.jpeg_share:
            from deepxray.phantoms.writers import to_8bit

            _, encoded = cv2.imencode(".jpg", to_8bit(pixels), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 96))])
            pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        view = chest_view(NormalisedImage.from_pixels(pixels))
        findings = phantom.extra["findings"]
        labels = np.asarray(findings["labels"], dtype=np.int8)
        masks = region_masks({region["label"]: region["boxes"] for region in findings["regions"]}, view)
        return view.pixels.astype(np.float16), labels, masks

    def describe(self) -> dict:
        lo, hi = self.film_scale
        return {
            "kind": "synthetic chest phantoms with findings rendered in memory (deepxray.phantoms.chest)",
            "seed": self.seed,
            "images": self.n,
            "findings_distribution": self.distribution,
            "film_size": f"{lo:.2f}-{hi:.2f} of 2048x2560 (pixel spacing scaled to match)",
            "degradations": f"{self.jpeg_share:.0%} JPEG quality 55-95",
        }


def region_masks(regions: dict, view: ChestView) -> np.ndarray:
    """(14, CAM_CELLS, CAM_CELLS) uint8: 1 where a map cell's centre lies in one of its label's boxes (film
    pixels, moved into the view), and at least the cell holding each box's centre."""
    masks = np.zeros((len(CHEST_FINDINGS), CAM_CELLS, CAM_CELLS), np.uint8)
    centres = (np.arange(CAM_CELLS) + 0.5) * CAM_STRIDE - 0.5  # view pixels
    for label, boxes in regions.items():
        j = CHEST_FINDINGS.index(label)
        for x0, y0, x1, y1 in boxes:
            (u0, v0), (u1, v1) = view.transform.to_view(np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5]]))
            rows = (centres >= v0) & (centres < v1)
            cols = (centres >= u0) & (centres < u1)
            masks[j][np.ix_(rows, cols)] = 1
            cy, cx = ((v0 + v1) / 2 + 0.5) / CAM_STRIDE, ((u0 + u1) / 2 + 0.5) / CAM_STRIDE
            masks[j, int(np.clip(cy, 0, CAM_CELLS - 1)), int(np.clip(cx, 0, CAM_CELLS - 1))] = 1
    return masks


@dataclass
class ChestTrainingSet:
    views: np.ndarray  # (n, CHEST_VIEW, CHEST_VIEW) float16
    labels: np.ndarray  # (n, 14) int8, CHEST_FINDINGS order
    ids: np.ndarray  # (n,) film index
    masks: np.ndarray  # (n, 14, CAM_CELLS, CAM_CELLS) uint8: where each finding is (`region_masks`)

    def save(self, path: Path, stamp: str) -> None:
        """The films as an .npz, with the stamp of what prepared them (`deepxray.training.cache`)."""
        with open(path, "wb") as file:  # a file, not a name: np.savez would append ".npz" to another suffix
            np.savez(file, views=self.views, labels=self.labels, ids=self.ids, masks=self.masks, **{STAMP_KEY: stamp})

    @classmethod
    def load(cls, path: Path) -> ChestTrainingSet:
        with np.load(path) as data:
            return cls(data["views"], data["labels"], data["ids"], data["masks"])


def _init_worker() -> None:
    cv2.setNumThreads(1)


def build_chest_set(
    source: ChestSource, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> ChestTrainingSet:
    """Render and prepare every film of `source`, one process per core, in index order."""
    jobs = source.jobs()
    workers = workers or os.cpu_count() or 1
    views = np.empty((len(jobs), CHEST_VIEW, CHEST_VIEW), np.float16)
    labels = np.empty((len(jobs), len(CHEST_FINDINGS)), np.int8)
    masks = np.empty((len(jobs), len(CHEST_FINDINGS), CAM_CELLS, CAM_CELLS), np.uint8)
    pool = None
    if workers == 1:
        _init_worker()
        iterator = map(source.example, jobs)
    else:  # a fork server, not fork: see deepxray.training.data.build_training_set
        pool = multiprocessing.get_context("forkserver").Pool(workers, initializer=_init_worker)
        iterator = pool.imap(source.example, jobs, chunksize=8)
    try:
        for i, (view, label, mask) in enumerate(iterator):
            views[i], labels[i], masks[i] = view, label, mask
            if progress:
                progress(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return ChestTrainingSet(views, labels, np.asarray(jobs), masks)


def load_or_build_chest(source: ChestSource, cache: Path | None = None, progress: bool = True) -> ChestTrainingSet:
    """The films of `source`, from `cache` when it holds what this source and this code render (and written there
    otherwise; see `deepxray.training.cache`)."""
    from tqdm import tqdm

    def render() -> ChestTrainingSet:
        with tqdm(total=source.n, desc="rendering chest films", unit="img", disable=not progress) as bar:
            return build_chest_set(source, progress=bar.update)

    return load_or_prepare(
        cache, repr(source), render, ChestTrainingSet.load, ChestTrainingSet.save, what="chest films"
    )
