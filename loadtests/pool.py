"""The pool of radiographs the load test uploads: full-size phantoms in every format we claim to read.

    POOL/png/     16-bit PNG hands, left and right
    POOL/jpeg/    8-bit JPEG hands, left and right
    POOL/dicom/   DICOM hands (uncompressed DX, MONOCHROME2), left and right
    POOL/others/  non-hands (chest, foot, knee or skull, photographs and documents), 16-bit PNG: each must get 422

Each folder is `deepxray phantoms generate` output (files and manifest.jsonl), made only when missing, with its
own seed, so the pool is the same on every machine. `python -m loadtests.run` and `python -m loadtests.faults`
make it when it is missing; to make it alone (about a minute on 2 cores):

    python -m loadtests.pool build/loadtest-pool
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

from loadtests.checks import Expected

GROUPS = ("png", "jpeg", "dicom", "others")
HANDS = "left_hand:2,right_hand:1"
OTHERS = "chest,foot,other_radiograph,not_radiograph"
DEFAULT_POOL = Path("build/loadtest-pool")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom", "others": "image/png"}


@dataclass(frozen=True)
class GroupSpec:
    file_format: str
    body_parts: str
    seed: int


def group_specs(seed: int) -> dict[str, GroupSpec]:
    return {
        "png": GroupSpec("png", HANDS, seed),
        "jpeg": GroupSpec("jpeg", HANDS, seed + 1),
        "dicom": GroupSpec("dicom", HANDS, seed + 2),
        "others": GroupSpec("png", OTHERS, seed + 3),
    }


@dataclass(frozen=True)
class PoolImage:
    group: str
    file: str
    data: bytes
    expected: Expected


def ensure_pool(pool: Path, hands: int = 6, others: int = 4, seed: int = 6000, progress: bool = False) -> Path:
    """Generates every missing group folder of the pool (a folder with a manifest is kept as it is)."""
    from deepxray.phantoms.generate import MANIFEST, GenerationSettings, generate_dataset

    pool = Path(pool)
    for group, spec in group_specs(seed).items():
        folder = pool / group
        if (folder / MANIFEST).is_file():
            continue
        n = others if group == "others" else hands
        settings = GenerationSettings(seed=spec.seed, file_format=spec.file_format)
        generate_dataset(folder, n, spec.body_parts, settings, progress=progress)
    return pool


def missing_groups(pool: Path, groups: tuple[str, ...] | list[str] = GROUPS) -> list[str]:
    """The groups of `groups` that `pool` does not hold yet (no manifest in their folder)."""
    from deepxray.phantoms.generate import MANIFEST

    return [group for group in groups if not (Path(pool) / group / MANIFEST).is_file()]


def load_pool(pool: Path, groups: tuple[str, ...] | list[str] = GROUPS) -> list[PoolImage]:
    """The pool's images (bytes in memory, so uploads cost no disk reads), in a fixed order that takes the groups
    in turn (a PNG, a JPEG, a DICOM, a non-hand, the next PNG, ...), so a few requests in a row cover them all."""
    from deepxray.phantoms.generate import read_manifest

    by_group = []
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown pool group {group!r}; choose from {', '.join(GROUPS)}")
        folder = Path(pool) / group
        by_group.append(
            [
                PoolImage(
                    group, r["file"], (folder / r["file"]).read_bytes(), Expected(r["body_part"], r.get("laterality"))
                )
                for r in read_manifest(folder)
            ]
        )
    images = [image for turn in itertools.zip_longest(*by_group) for image in turn if image is not None]
    if not images:
        raise ValueError(f"no images in {pool} for {', '.join(groups)}")
    return images


def parse_groups(spec: str) -> tuple[str, ...]:
    """`png,jpeg` or `all` to the pool groups."""
    if spec.strip() == "all":
        return GROUPS
    groups = tuple(g.strip() for g in spec.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown pool groups {unknown}; choose from {', '.join(GROUPS)} or 'all'")
    return groups


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.pool [FOLDER]`: makes the pool's missing groups (default build/loadtest-pool)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m loadtests.pool [FOLDER]  (default: build/loadtest-pool)", file=sys.stderr)
        return 2
    pool = Path(args[0]) if args else DEFAULT_POOL
    missing = missing_groups(pool)
    if missing:
        print(f"making {', '.join(missing)} of the phantom pool in {pool} (full-size films; about a minute on 2 "
              "cores)", file=sys.stderr)  # fmt: skip
        ensure_pool(pool, progress=True)
    print(f"the pool in {pool} holds {len(load_pool(pool))} films")
    return 0


if __name__ == "__main__":
    sys.exit(main())
