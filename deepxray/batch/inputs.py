"""What `deepxray score` scores: files, folders (recursive) and lists of paths (a text file, one path a line, or
a CSV with a `path` column), each film with a stable id: the SHA-256 of its bytes, so a film keeps its id when it
is moved, renamed or listed twice, and resume recognises it."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

# Files a folder contributes: the formats the service reads, and DICOM files as archives name them (often with no
# suffix at all). Anything else in a folder (manifests, notes) is left out; a file named explicitly is always tried.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ""})
LIST_SUFFIXES = frozenset({".txt", ".csv", ".lst"})
PATH_COLUMNS = ("path", "file", "source")
ID_HEX = 32  # 128 bits of the SHA-256: no two films of any registry share it


@dataclass(frozen=True)
class Film:
    """A file to score, and the pseudonymous patient key its list gave it (`--patient-key`)."""

    source: str
    patient_key: str | None = None


def image_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:ID_HEX]


def file_id(path: str | Path) -> str | None:
    """The image id of the file at `path`, read in pieces; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:ID_HEX]


def collect_films(inputs: list[str | Path], patient_key: str | None = None) -> list[Film]:
    """The films of `inputs`, in order, each once (by path). A list file (.txt, .csv, .lst) contributes its paths,
    relative ones taken from the list's folder; `patient_key` names the CSV column holding each film's patient key.
    A path that does not exist is kept: it becomes a row saying so, never a stop."""
    films: dict[str, Film] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith("."))  # fmt: skip
            entries = [Film(str(p)) for p in found]
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            entries = read_list(path, patient_key)
        else:
            entries = [Film(str(path))]
        for film in entries:
            films.setdefault(film.source, film)
    return list(films.values())


def read_list(path: Path, patient_key: str | None) -> list[Film]:
    """The films a list names: a CSV with a header naming `path` (or `file`, `source`), else one path a line."""
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    column = next((name for name in header if name.strip().lower() in PATH_COLUMNS), None)
    if path.suffix.lower() == ".csv" and column is None:
        raise ValueError(f"{path} needs a header with a path column ({', '.join(PATH_COLUMNS)}); it has {lines[0]!r}")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(lines))
        if patient_key and patient_key not in header:
            raise ValueError(f"{path} has no column {patient_key!r} for --patient-key (it has {', '.join(header)})")
        return [Film(str(_beside(path, row[column].strip())), (row.get(patient_key) or "").strip() or None
                     if patient_key else None) for row in rows if row.get(column, "").strip()]  # fmt: skip
    if patient_key:
        raise ValueError(f"--patient-key needs a CSV list with a header (path,{patient_key}); {path} is not one")
    return [Film(str(_beside(path, line.strip()))) for line in lines]


def _beside(listing: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else listing.parent / path


def read_film(film: Film) -> tuple[bytes | None, dict | None]:
    """The film's bytes, or (None, the error body of a file that cannot be read: a refused row)."""
    try:
        return Path(film.source).read_bytes(), None
    except OSError as error:
        return None, {"error": "unreadable", "detail": f"The file could not be read ({error.strerror})."}
