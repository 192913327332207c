"""`--cache`: prepared arrays in an .npz, reused only while they are what the same request would prepare now.

Rendering and preparing films is most of a short training run, so `deepxray train --cache FILE` and
`python -m evaluation.chest --cache FILE` keep the arrays. A cache is stamped with what made it: the source's
settings (seed, count, mixture, degradations, or the manifest's records) and a fingerprint of the code that renders
and prepares films (`PREPARING_CODE`: the generator, the serving preprocessing, and the training modules that turn
films into arrays; not the trainers, so changing a trainer keeps its cache). A file whose stamp differs (other
settings, changed preparing code, or a file from before stamps) is prepared again and overwritten, with a line
saying why: reusing it would train or measure on films the request did not ask for, silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

PACKAGE = Path(__file__).resolve().parents[1]
# What renders a film and turns it into arrays: folders and files under the package.
PREPARING_CODE = ("phantoms", "imaging", "training/data.py", "training/chest_data.py")
STAMP_KEY = "cache_stamp"

Data = TypeVar("Data")


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 over the sources that render and prepare films (paths and contents, in path order)."""
    digest = hashlib.sha256()
    for entry in PREPARING_CODE:
        where = PACKAGE / entry
        for path in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def stamp_for(settings: str) -> str:
    """The stamp of arrays prepared from `settings` (a full, deterministic description) by this code."""
    return hashlib.sha256(f"{settings}\n{code_fingerprint()}".encode()).hexdigest()


def read_stamp(path: Path) -> str | None:
    """The stamp an .npz cache holds; None for a file without one (or one NumPy cannot read)."""
    try:
        with np.load(path) as data:
            return str(data[STAMP_KEY]) if STAMP_KEY in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_or_prepare(
    cache: Path | None,
    settings: str,
    prepare: Callable[[], Data],
    load: Callable[[Path], Data],
    save: Callable[[Data, Path, str], None],
    what: str,
) -> Data:
    """`what` from `cache` when its stamp matches `settings` and this code; else prepared, and saved there."""
    stamp = stamp_for(settings)
    if cache is not None and Path(cache).is_file():
        if read_stamp(cache) == stamp:
            print(f"using cached {what} {cache}", flush=True)
            return load(cache)
        print(f"{cache} holds {what} from other settings or other preparing code: preparing them again", flush=True)
    data = prepare()
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".partial")  # a run stopped while writing leaves no half cache
        save(data, partial, stamp)
        os.replace(partial, cache)
    return data
