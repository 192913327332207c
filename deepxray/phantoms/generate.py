"""Generating a labelled set of phantom files and its manifest, on several cores, with a progress bar."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepxray.labels import BODY_PARTS, BOTH_HANDS, JOINT_NAMES
from deepxray.phantoms.chest import render_chest_phantom, stored_record
from deepxray.phantoms.phantom import DEFAULT_SHAPE, Phantom, render_phantom
from deepxray.phantoms.stored import STORED, store
from deepxray.phantoms.writers import (
    EXTENSIONS,
    PRESENTATION_LUT_SHAPES,
    TIFF_PREAMBLE,
    default_modality,
    write_dicom,
    write_jpeg,
    write_png,
)

MANIFEST = "manifest.jsonl"
# `--body-parts all`: every class, weighted for training the body-part model.
ALL_BODY_PARTS = {"left_hand": 0.4, "right_hand": 0.15, "chest": 0.1, "foot": 0.1, "other_radiograph": 0.1,
                  "not_radiograph": 0.15}  # fmt: skip


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate; everything a worker needs to make image `index` on its own."""

    seed: int = 0
    distribution: str = "clinical"
    file_format: str = "png"
    shape: tuple[int, int] = DEFAULT_SHAPE
    photometric: str = "MONOCHROME2"
    dicom_compression: str = "none"
    # DICOM only: Presentation LUT Shape of grayscale images (None, "IDENTITY", "INVERSE"; see `write_dicom`), and
    # the File Preamble: None (zeros) or "tiff" (dual-personality files, uncompressed only).
    presentation_lut: str | None = None
    dicom_preamble: str | None = None
    # How each film is stored: upright, turned90/180/270, mirrored (`deepxray.phantoms.stored`), or "any" of them.
    stored: str = "upright"
    # Chest films with labelled findings (`deepxray.phantoms.chest`; `distribution` sets their prevalence) instead
    # of the plain chest the body-part model learns "not a hand" from.
    chest_findings: bool = False

    def __post_init__(self):
        # Checked here, not in the workers: a bad combination fails before any file is written.
        if self.presentation_lut not in (None, *PRESENTATION_LUT_SHAPES):
            raise ValueError(f"presentation_lut must be None or one of {PRESENTATION_LUT_SHAPES}")
        if self.dicom_preamble not in (None, TIFF_PREAMBLE):
            raise ValueError(f"dicom_preamble must be None or {TIFF_PREAMBLE!r}")
        if self.stored not in (*STORED, "any"):
            raise ValueError(f"stored must be one of {', '.join(STORED)} or any")
        if self.dicom_preamble == TIFF_PREAMBLE and self.dicom_compression != "none":
            raise ValueError("a TIFF preamble needs uncompressed DICOM (--dicom-compression none)")


def parse_body_parts(spec: str) -> dict[str, float]:
    """`left_hand`, `all`, `left_hand,chest` or `left_hand:3,both_hands:1` to normalised weights (`both_hands`:
    films of both hands, for evaluation; `all` is what the body-part model trains on)."""
    if spec.strip() == "all":
        return dict(ALL_BODY_PARTS)
    weights: dict[str, float] = {}
    for item in spec.split(","):
        name, _, weight = item.strip().partition(":")
        if name not in (*BODY_PARTS, BOTH_HANDS):
            raise ValueError(f"unknown body part {name!r}; choose from {', '.join(BODY_PARTS)}, {BOTH_HANDS} or 'all'")
        weights[name] = float(weight) if weight else 1.0
        if weights[name] <= 0:
            raise ValueError(f"weight of {name} must be positive")
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def plan_body_parts(n: int, weights: dict[str, float], seed: int) -> list[str]:
    """Exactly proportional counts (largest remainder), in an order shuffled by the seed."""
    names = list(weights)
    exact = np.array([weights[name] * n for name in names])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    plan = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,))).permutation(n)
    return [plan[i] for i in order]


def manifest_record(phantom: Phantom, file: str, index: int, settings: GenerationSettings, **extra) -> dict:
    """One manifest line: the file and everything known about it. `hands` labels every hand on the film (left
    hand first); a single-hand film also keeps its hand's `laterality` and `joints` at the top level. Positions
    are in the file as stored (`stored`: upright, turned, mirrored), and a mirrored hand's laterality is the
    one its mirror image shows."""
    image = phantom.image
    record = {
        "file": file,
        "index": index,
        "seed": settings.seed,
        "body_part": phantom.body_part,
        "kind": phantom.kind,
        "laterality": phantom.laterality,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "pixel_spacing_mm": phantom.pixel_spacing_mm,
        "format": settings.file_format,
        "bits_stored": 12 if image.dtype == np.uint16 and settings.file_format != "jpeg" else 8,
        "distribution": settings.distribution if phantom.hands else None,
        "joints": None,
        "hands": None,
        "stored": phantom.extra.get("stored", "upright"),
        **extra,
    }
    if "findings" in phantom.extra:  # a chest film with findings: labels and regions, in the stored film's pixels
        record["findings"] = phantom.extra["findings"]
    if phantom.hands is not None:
        record["hands"] = [
            {
                "laterality": hand.laterality,
                "box": list(hand.box),
                "joints": {
                    name: {"center": [round(c, 2) for c in hand.centers[name]], "score": hand.scores[name]}
                    for name in JOINT_NAMES
                },
            }
            for hand in phantom.hands
        ]
    if phantom.scores is not None and phantom.centers is not None:
        record["joints"] = {
            name: {"center": [round(c, 2) for c in phantom.centers[name]], "score": phantom.scores[name]}
            for name in JOINT_NAMES
        }
        record["ring"] = phantom.extra.get("ring", False)
    return record


def write_phantom(out_dir: Path, index: int, body_part: str, settings: GenerationSettings) -> dict:
    """Render and write image `index`; returns its manifest record."""
    if body_part == "chest" and settings.chest_findings:
        phantom = render_chest_phantom(settings.seed, index, settings.distribution, settings.shape)
    else:
        phantom = render_phantom(settings.seed, index, body_part, settings.distribution, settings.shape)
    how = settings.stored
    if how == "any":  # drawn from its own stream, so the choice leaves the image's other draws alone
        how = str(
            np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(index, 2**30))).choice(list(STORED))
        )
    if "findings" in phantom.extra:
        height, width = phantom.image.shape[:2]
        findings = stored_record(phantom.extra["findings"], how, height, width)
        phantom.extra = {**phantom.extra, "findings": findings}
    phantom = store(phantom, how)
    file = f"{index:05d}{EXTENSIONS[settings.file_format]}"
    path = out_dir / file
    extra = {}
    if settings.file_format == "png":
        write_png(path, phantom.image)
    elif settings.file_format == "jpeg":
        write_jpeg(path, phantom.image)
    else:
        grayscale = phantom.image.ndim == 2
        syntax = write_dicom(
            path,
            phantom,
            f"{settings.seed}-{index}",
            settings.photometric,
            settings.dicom_compression,
            presentation_lut_shape=settings.presentation_lut,
            preamble=settings.dicom_preamble,
        )
        extra = {
            "photometric": settings.photometric if grayscale else "RGB",
            "transfer_syntax": syntax,
            "modality": default_modality(phantom),
            "presentation_lut_shape": settings.presentation_lut if grayscale else None,
            "dicom_preamble": settings.dicom_preamble,
        }
    return manifest_record(phantom, file, index, settings, **extra)


def _worker_init() -> None:
    # One thread per worker process: the cores are shared out between processes, not threads.
    import cv2

    cv2.setNumThreads(1)


def _work(job: tuple[Path, int, str, GenerationSettings]) -> dict:
    return write_phantom(*job)


def generate_dataset(
    out_dir: Path,
    n: int,
    body_parts: str = "left_hand",
    settings: GenerationSettings = GenerationSettings(),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write `n` phantoms and `manifest.jsonl` (one JSON line per image, in index order) into `out_dir`."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_body_parts(n, parse_body_parts(body_parts), settings.seed)
    jobs = [(out_dir, i, part, settings) for i, part in enumerate(plan)]
    workers = workers or os.cpu_count() or 1
    records: Iterator[dict]
    bar = tqdm(total=n, desc="phantoms", unit="img", disable=not progress)
    manifest = out_dir / MANIFEST
    tmp = manifest.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if workers == 1:
            _worker_init()
            records = map(_work, jobs)
            pool = None
        else:
            # forkserver, not fork: a process that already runs threads (Ray, gRPC, a test session) can leave a
            # lock held in a forked child, which then never starts; the fork server is a fresh process.
            pool = multiprocessing.get_context("forkserver").Pool(workers, initializer=_worker_init)
            records = pool.imap(_work, jobs, chunksize=1)
        try:
            for record in records:
                f.write(json.dumps(record) + "\n")
                bar.update(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            bar.close()
    tmp.replace(manifest)
    (out_dir / "generation.json").write_text(
        json.dumps({"n": n, "body_parts": body_parts, **asdict(settings)}, indent=2) + "\n", encoding="utf-8"
    )
    return manifest


def read_manifest(path: Path) -> list[dict]:
    """The records of a manifest file (or of `DIR/manifest.jsonl` when given a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
