"""Bootstrap confidence intervals that resample whole images, not single joints.

The ten joints of one radiograph are scored from the same film, by the same reader, with the same exposure: they
are not independent. Resampling joints would treat 300 images as 3000 independent draws and give intervals that
are too narrow, so every interval here draws images with replacement and keeps all joints of a drawn image.

Two ways to use the same draws:

- `bootstrap_ci` and `paired_difference_ci` call any statistic on resampled arrays (simple, general).
- `ImageResampler` sums per-image quantities (confusion-matrix cells, hit counts) for every resample at once with
  one matrix product, for the many ratio statistics of a report. For the same seed it draws the same images as the
  functions above, so both give the same interval for the same statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Resamples per block of draws: bounds memory at about (block x images) integers for large registries.
_BLOCK_ELEMENTS = 4_000_000


def image_draws(n_images: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of drawn image indices, shape (resamples in block, n_images), in a fixed order for a seed.

    Every user of the bootstrap draws through this function, so the same seed means the same resampled images.
    `n_resamples=0` draws nothing (no intervals, for a quick look).
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must not be negative, got {n_resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n_images, 1))
    for start in range(0, n_resamples, block):
        yield rng.integers(0, n_images, size=(min(block, n_resamples - start), n_images))


def percentile_interval(values: ArrayLike, level: float = DEFAULT_LEVEL) -> tuple[float | None, float | None]:
    """Percentile interval of the finite values (NaN marks a resample where the statistic was undefined)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level}")
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _group_index(groups: ArrayLike | None, n_samples: int) -> tuple[np.ndarray, int]:
    """Image number (0..n_groups-1) of every sample; `None` makes every sample its own group."""
    if groups is None:
        return np.arange(n_samples), n_samples
    groups = np.asarray(groups)
    if groups.shape != (n_samples,):
        raise ValueError(f"groups needs one entry per sample ({n_samples}), got shape {groups.shape}")
    unique, inverse = np.unique(groups, return_inverse=True)
    return inverse.ravel(), len(unique)


class _IndexSampler:
    """Sample indices of the drawn groups, members kept together."""

    def __init__(self, group_of_sample: np.ndarray, n_groups: int):
        self.order = np.argsort(group_of_sample, kind="stable")
        self.sizes = np.bincount(group_of_sample, minlength=n_groups)
        self.starts = np.cumsum(self.sizes) - self.sizes

    def indices(self, drawn_groups: np.ndarray) -> np.ndarray:
        sizes = self.sizes[drawn_groups]
        offsets = np.cumsum(sizes) - sizes
        # Position k of the output belongs to drawn group g: start of g in `order` plus k's rank inside g.
        within = np.arange(sizes.sum()) - np.repeat(offsets, sizes)
        return self.order[np.repeat(self.starts[drawn_groups], sizes) + within]


def _as_value(result: float | None) -> float:
    return np.nan if result is None else float(result)


def bootstrap_ci(
    statistic: Callable[..., float | None],
    *arrays: ArrayLike,
    groups: ArrayLike | None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `statistic(*arrays)`, resampling whole groups (images).

    Args:
        statistic: Function of the resampled arrays, e.g. `cohen_kappa`; a resample where it returns `None`
            (undefined, e.g. one class only) is skipped.
        *arrays: Equally long 1-D arrays, one entry per sample (joint).
        groups: Image id of every sample; all samples of a drawn image go into the resample together. `None`
            resamples single samples, which is right only when samples are independent.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the draws; the same seed draws the same images.
        level: Coverage of the interval, 0.95 for a 95 % interval.

    Returns:
        (low, high), or (None, None) when the statistic is undefined in every resample.
    """
    columns = [np.asarray(a) for a in arrays]
    if not columns:
        raise ValueError("bootstrap_ci needs at least one array")
    n_samples = len(columns[0])
    if any(len(c) != n_samples for c in columns):
        raise ValueError("all arrays need the same length")
    if n_samples == 0:
        return None, None
    group_of_sample, n_groups = _group_index(groups, n_samples)
    sampler = _IndexSampler(group_of_sample, n_groups)
    values = [
        _as_value(statistic(*(c[index] for c in columns)))
        for block in image_draws(n_groups, n_resamples, seed)
        for index in map(sampler.indices, block)
    ]
    return percentile_interval(values, level)


def paired_difference_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float | None],
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    groups: ArrayLike | None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> tuple[float | None, float | None, float | None]:
    """Difference `statistic(B) - statistic(A)` of two model sets on the same images, with a paired interval.

    Both model sets are evaluated on the same resampled images in every resample, so the interval reflects only
    how the two differ, not how hard the drawn images happen to be.

    Returns:
        (difference, low, high); `None` where undefined (the statistic is undefined for A or B on all data, or in
        every resample).
    """
    y_true, pred_a, pred_b = (np.asarray(a) for a in (y_true, pred_a, pred_b))
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError("y_true, pred_a and pred_b need the same length")
    a, b = statistic(y_true, pred_a), statistic(y_true, pred_b)
    if a is None or b is None:
        return None, None, None

    def difference(truth: np.ndarray, first: np.ndarray, second: np.ndarray) -> float | None:
        value_a, value_b = statistic(truth, first), statistic(truth, second)
        return None if value_a is None or value_b is None else value_b - value_a

    low, high = bootstrap_ci(
        difference, y_true, pred_a, pred_b, groups=groups, n_resamples=n_resamples, seed=seed, level=level
    )
    return float(b - a), low, high


class ImageResampler:
    """Sums of per-sample quantities over the images of every bootstrap resample, by matrix products.

    A report needs intervals for dozens of ratio statistics (per-class precision, kappa per joint, shares of
    refused hands); each is a function of a few sums (confusion-matrix cells, hit counts). Summing per image first
    and then multiplying by how often each image was drawn gives all resamples in one product.

    Args:
        n_images: Number of images; samples refer to them by index 0..n_images-1.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the draws (the same draws as `bootstrap_ci` with groups = image index).
    """

    def __init__(self, n_images: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
        self.n_images = n_images
        self.n_resamples = n_resamples
        self.seed = seed

    def sum_per_image(self, image_index: ArrayLike, values: ArrayLike) -> np.ndarray:
        """Sum the rows of `values` (samples x quantities) per image: shape (n_images, quantities)."""
        image_index = np.asarray(image_index, dtype=np.intp)
        values = np.asarray(values, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        totals = np.zeros((self.n_images, values.shape[1]))
        np.add.at(totals, image_index, values)
        return totals

    def count_per_image(self, image_index: ArrayLike, codes: ArrayLike, n_codes: int) -> np.ndarray:
        """How often each code (e.g. a confusion-matrix cell) occurs per image: shape (n_images, n_codes)."""
        image_index = np.asarray(image_index, dtype=np.intp)
        codes = np.asarray(codes, dtype=np.intp)
        counts = np.bincount(image_index * n_codes + codes, minlength=self.n_images * n_codes)
        return counts.reshape(self.n_images, n_codes).astype(float)

    def resample(self, per_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Totals of per-image quantities over all images, and over the images of every resample.

        Args:
            per_image: Shape (n_images, quantities), from `sum_per_image` or `count_per_image`.

        Returns:
            (full, resampled): shapes (quantities,) and (n_resamples, quantities).
        """
        if self.n_images == 0:  # nothing to draw from: every resample is empty
            return per_image.sum(0), np.zeros((self.n_resamples, per_image.shape[1]))
        blocks = [np.zeros((0, per_image.shape[1]))]  # n_resamples=0 draws no block
        for block in image_draws(self.n_images, self.n_resamples, self.seed):
            # How often each image was drawn in each resample, then one product for the whole block.
            rows = np.arange(len(block))[:, None] * self.n_images
            counts = np.bincount((rows + block).ravel(), minlength=len(block) * self.n_images)
            blocks.append(counts.reshape(len(block), self.n_images) @ per_image)
        return per_image.sum(0), np.concatenate(blocks)
