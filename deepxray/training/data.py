"""Training examples: labelled radiographs turned into the arrays the three models learn from.

Examples come from files listed in a manifest (the phantom generator's format, or a team's own radiographs in
it) or are rendered in memory from the generator. Either way every image goes through the serving preprocessing
(`deepxray.imaging.model_inputs`), so the models learn from exactly what they will see.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deepxray.imaging import decode_image
from deepxray.imaging.model_inputs import (
    CROP_SIZE,
    NormalisedImage,
    body_part_view,
    detector_view,
    joint_crops,
)
from deepxray.labels import BODY_PARTS, HAND_PARTS, JOINT_NAMES
from deepxray.training.cache import STAMP_KEY

# Joint crops for training are cut with this much extra margin, so augmentation can shift and turn them.
CROP_CONTEXT = 1.5
CONTEXT_CROP_SIZE = int(round(CROP_SIZE * CROP_CONTEXT))


@dataclass
class Example:
    """What one labelled image contributes: a body-part view always; a detector view and crops for a hand."""

    image_id: int
    body_part: int
    body_view: np.ndarray  # (BODY_PART_VIEW,)*2 float32
    detector_view: np.ndarray | None = None  # (DETECTOR_VIEW,)*2 float32, a left hand's orientation
    detector_points: np.ndarray | None = None  # (10, 2) view pixels
    crops: np.ndarray | None = None  # (10, CONTEXT_CROP_SIZE, CONTEXT_CROP_SIZE) float32
    scores: np.ndarray | None = None  # (10,) int


def prepare_example(pixels: np.ndarray, record: dict, image_id: int) -> Example:
    """The serving preprocessing applied to one labelled image.

    `record` has the manifest's keys: body_part, and for hands laterality and joints {name: {center, score}}.
    A right hand's view and crops are flipped into a left hand's orientation, as the service does.
    """
    image = NormalisedImage.from_pixels(pixels)
    example = Example(image_id, BODY_PARTS.index(record["body_part"]), body_part_view(image))
    joints = record.get("joints")
    if record["body_part"] not in HAND_PARTS or not joints:
        return example
    centers = np.array([joints[name]["center"] for name in JOINT_NAMES], dtype=np.float64)
    mirrored = record.get("laterality") == "R"
    view = detector_view(image, mirrored)
    center_map = {name: tuple(c) for name, c in zip(JOINT_NAMES, centers, strict=True)}
    example.detector_view = view.pixels
    example.detector_points = view.to_view(centers).astype(np.float32)
    crops = joint_crops(image, center_map, JOINT_NAMES, mirrored, out_size=CONTEXT_CROP_SIZE, context=CROP_CONTEXT)
    example.crops = crops
    example.scores = np.array([joints[name]["score"] for name in JOINT_NAMES], dtype=np.int64)
    return example


def rotate_image(pixels: np.ndarray, centers: dict | None, degrees: float) -> tuple[np.ndarray, dict | None]:
    """Turn an image about its centre on a canvas large enough to keep every pixel; joint centres turn with it."""
    h, w = pixels.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += (new_w - w) / 2
    matrix[1, 2] += (new_h - h) / 2
    turned = cv2.warpAffine(pixels, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=0)
    if centers is None:
        return turned, None
    moved = {
        name: (matrix[:, :2] @ np.asarray(xy, dtype=np.float64) + matrix[:, 2]).tolist() for name, xy in centers.items()
    }
    return turned, moved


def degrade(pixels: np.ndarray, record: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """What happens to films on their way to us: a film turned on the scanner, JPEG at modest quality, lower
    resolution (labels follow).

    Seen in training, these keep the models steady on the inputs the service must accept: the phantoms' own pose
    covers ±25°; a turned scan adds up to ±30° more.
    """
    if rng.random() < 0.3:
        joints = record.get("joints")
        centers = {name: joint["center"] for name, joint in joints.items()} if joints else None
        pixels, moved = rotate_image(pixels, centers, float(rng.uniform(-30.0, 30.0)))
        if joints:
            record = dict(record)
            record["joints"] = {name: {"center": moved[name], "score": j["score"]} for name, j in joints.items()}
    if rng.random() < 0.25:
        factor = float(rng.uniform(0.45, 0.8))
        h, w = pixels.shape[:2]
        pixels = cv2.resize(pixels, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        if record.get("joints"):
            record = dict(record)
            record["joints"] = {
                name: {"center": [(c + 0.5) * factor - 0.5 for c in joint["center"]], "score": joint["score"]}
                for name, joint in record["joints"].items()
            }
    if rng.random() < 0.25:
        from deepxray.phantoms.writers import to_8bit

        quality = int(rng.integers(55, 96))
        _, encoded = cv2.imencode(".jpg", to_8bit(pixels), [cv2.IMWRITE_JPEG_QUALITY, quality])
        pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return pixels, record


@dataclass(frozen=True)
class SyntheticSource:
    """Phantoms rendered in memory: `n` images of the set `seed`, body parts mixed by `body_parts`."""

    seed: int
    n: int
    body_parts: str = "left_hand:0.5,right_hand:0.2,chest:0.06,foot:0.06,other_radiograph:0.07,not_radiograph:0.11"
    distribution: str = "balanced"
    degrade: bool = True

    def example(self, index_and_part: tuple[int, str]) -> Example:
        from deepxray.phantoms.generate import GenerationSettings, manifest_record
        from deepxray.phantoms.phantom import render_phantom

        index, body_part = index_and_part
        phantom = render_phantom(self.seed, index, body_part, self.distribution)
        record = manifest_record(phantom, "", index, GenerationSettings(seed=self.seed))
        pixels = phantom.image
        if phantom.image.ndim == 3:
            pixels = cv2.cvtColor(phantom.image, cv2.COLOR_RGB2GRAY)
        if self.degrade:
            pixels, record = degrade(pixels, record, np.random.default_rng([self.seed, index, 77]))
        return prepare_example(pixels, record, index)

    def jobs(self) -> list[tuple[int, str]]:
        from deepxray.phantoms.generate import parse_body_parts, plan_body_parts

        return list(enumerate(plan_body_parts(self.n, parse_body_parts(self.body_parts), self.seed)))


@dataclass(frozen=True)
class ManifestSource:
    """Labelled files listed in a manifest (`DIR/manifest.jsonl`), decoded as the service decodes uploads."""

    directory: Path
    records: tuple = field(default=(), compare=False)

    @classmethod
    def open(cls, directory: Path) -> ManifestSource:
        from deepxray.phantoms.generate import read_manifest

        return cls(Path(directory), tuple(read_manifest(directory)))

    def example(self, job: tuple[int, dict]) -> Example:
        index, record = job
        decoded = decode_image((self.directory / record["file"]).read_bytes())
        return prepare_example(decoded.pixels, record, index)

    def jobs(self) -> list[tuple[int, dict]]:
        return list(enumerate(self.records))


@dataclass
class TrainingSet:
    """All examples stacked into arrays, one group per model.

    Images are kept as float16 (half the memory of float32; about 3 significant digits, far finer than the
    noise of any radiograph); examples themselves are float32, exactly what the service computes.
    """

    body_views: np.ndarray
    body_labels: np.ndarray
    body_ids: np.ndarray
    detector_views: np.ndarray
    detector_points: np.ndarray
    hand_ids: np.ndarray
    crops: np.ndarray  # (hands, 10, S, S)
    scores: np.ndarray  # (hands, 10)

    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> TrainingSet:
        examples = list(examples)
        hands = [e for e in examples if e.detector_view is not None]
        crop_shape = (0, len(JOINT_NAMES), CONTEXT_CROP_SIZE, CONTEXT_CROP_SIZE)
        return cls(
            body_views=np.stack([e.body_view for e in examples]).astype(np.float16),
            body_labels=np.array([e.body_part for e in examples], dtype=np.int64),
            body_ids=np.array([e.image_id for e in examples], dtype=np.int64),
            detector_views=(
                np.stack([e.detector_view for e in hands]).astype(np.float16)
                if hands
                else np.zeros((0, 1, 1), np.float16)
            ),
            detector_points=np.stack([e.detector_points for e in hands]) if hands else np.zeros((0, 10, 2)),
            hand_ids=np.array([e.image_id for e in hands], dtype=np.int64),
            crops=np.stack([e.crops for e in hands]).astype(np.float16) if hands else np.zeros(crop_shape, np.float16),
            scores=np.stack([e.scores for e in hands]) if hands else np.zeros((0, 10), np.int64),
        )

    def save(self, path: Path, stamp: str) -> None:
        """The arrays as an .npz, with the stamp of what prepared them (`deepxray.training.cache`)."""
        with open(path, "wb") as file:  # a file, not a name: np.savez would append ".npz" to another suffix
            np.savez(file, **self.__dict__, **{STAMP_KEY: np.array(stamp)})

    @classmethod
    def load(cls, path: Path) -> TrainingSet:
        with np.load(path) as data:
            return cls(**{key: data[key] for key in data.files if key != STAMP_KEY})


def _init_worker() -> None:
    cv2.setNumThreads(1)


def build_training_set(
    source: SyntheticSource | ManifestSource,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainingSet:
    """Prepare every example of `source`, on one process per core, in a fixed order."""
    jobs = source.jobs()
    workers = workers or os.cpu_count() or 1
    examples = []
    if workers == 1:
        _init_worker()
        iterator = map(source.example, jobs)
        pool = None
    else:
        # Workers from a fork server (a fresh process): forking a process that already runs threads (TensorFlow,
        # Ray, a test session) can leave a lock held in the child. The workers only need numpy and cv2.
        pool = multiprocessing.get_context("forkserver").Pool(workers, initializer=_init_worker)
        iterator = pool.imap(source.example, jobs, chunksize=4)
    try:
        for example in iterator:
            examples.append(example)
            if progress:
                progress(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return TrainingSet.from_examples(examples)


def validation_mask(ids: np.ndarray, share: float = 0.1, seed: int = 0) -> np.ndarray:
    """Which examples are held out: chosen per image, so the ten joints of one image stay on one side."""
    rng = np.random.default_rng([seed, 4242])
    unique = np.unique(ids)
    held = set(rng.choice(unique, size=max(1, int(round(len(unique) * share))), replace=False).tolist())
    return np.array([i in held for i in ids])
