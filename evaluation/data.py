"""Labelled radiographs for evaluation: the phantom generator's manifest, or a team's own CSV.

`load_labels(path)` reads either format and returns one `LabelledImage` per image.

**Phantom manifest** (written by `deepxray phantoms generate`): a directory holding `manifest.jsonl`, or the
`.jsonl` file itself; one JSON object per line with `file`, `body_part`, `laterality`, `width`, `height` and
`joints` (`{name: {"center": [x, y], "score": s}}`, or `null` for images that are not hands). A film of both
hands (`"body_part": "both_hands"`) labels each hand in `hands`: `[{"laterality": "L", "joints": {...}}, ...]`.

**CSV for your own radiographs** (comma-, semicolon- or tab-separated, UTF-8, one row per image)::

    image,laterality,mcp1,mcp2,mcp3,mcp4,mcp5,pip1,pip2,pip3,pip4,pip5
    scans/patient017_2019.dcm,L,0,1,0,0,2,0,1,1,0,3
    scans/patient017_2019_right.dcm,R,0,0,0,1,1,0,0,0,0,1
    scans/patient018_2020.png,L,0,0,,0,0,0,0,0,0,0

- `image` (required): path of the file, relative to the CSV's folder (or absolute).
- `laterality` (required): `L` or `R` for hands; may be empty when `body_part` says the image is not a hand.
- `mcp1` … `pip5` (required columns): the reader's Ratingen score 0..5; an empty cell means "not scored" and the
  joint is left out of the score metrics. A row with all ten empty is an image without scores.
- `body_part` (optional): one of left_hand, right_hand, chest, foot, other_radiograph, not_radiograph; if the
  column is absent or the cell is empty, `L` means left_hand and `R` right_hand.
- `mcp1_x`, `mcp1_y`, … `pip5_x`, `pip5_y` (optional): joint centres in pixels of the stored image (x to the
  right, y down), for the localisation metrics; both or neither of a joint's pair must be filled.
- A film of both hands: two rows with the same `image`, one `L` and one `R` (the body part becomes
  `both_hands`); a single row with `body_part` `both_hands` labels one hand of such a film (its laterality).

Errors in the file are `ValueError`s that name the row (counted as in a spreadsheet, header = row 1) and column.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from deepxray.labels import BODY_PARTS, BOTH_HANDS, HAND_PARTS, JOINT_NAMES, RATINGEN_CLASSES

MANIFEST = "manifest.jsonl"
LATERALITY_PARTS = {"L": "left_hand", "R": "right_hand"}
REQUIRED_COLUMNS: tuple[str, ...] = ("image", "laterality", *JOINT_NAMES)
FILM_PARTS: tuple[str, ...] = (*BODY_PARTS, BOTH_HANDS)


@dataclass
class LabelledHand:
    """One hand on a film: laterality ("L"/"R"), Ratingen scores and joint centres as in `LabelledImage`."""

    laterality: str | None
    scores: dict[str, int] | None = None
    centers: dict[str, tuple[float, float]] | None = None


@dataclass
class LabelledImage:
    """One radiograph and what is known about it.

    Attributes:
        path: Absolute path of the image file.
        body_part: True body part, one of `BODY_PARTS`, or `BOTH_HANDS` for a film of both hands.
        laterality: "L", "R", or `None` for images that are not a single hand.
        scores: Joint name -> Ratingen score 0..5 for the scored joints, or `None` when nothing was scored (or
            the film shows both hands: see `hands`).
        centers: Joint name -> (x, y) centre in pixels, or `None` when no centres are labelled.
        hands: Every labelled hand on the film, left hand first: a hand film's one hand (from the fields above),
            each hand of a film of both hands; empty for images that are not hands.
    """

    path: Path
    body_part: str
    laterality: str | None
    scores: dict[str, int] | None = None
    centers: dict[str, tuple[float, float]] | None = None
    hands: list[LabelledHand] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.hands and self.body_part in HAND_PARTS:
            self.hands = [LabelledHand(self.laterality or self.body_part[0].upper(), self.scores, self.centers)]


def load_labels(path: str | Path) -> list[LabelledImage]:
    """Labelled images from a phantom manifest (directory or `.jsonl`) or from a CSV file (see the module doc).

    Raises:
        ValueError: The file does not exist or is malformed, or images it names are missing.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ValueError(f"{path} is a directory without {MANIFEST}; give a manifest or a CSV file")
        path = path / MANIFEST
    if not path.is_file():
        raise ValueError(f"label file {path} does not exist")
    images = _read_manifest(path) if path.suffix.lower() == ".jsonl" else _read_csv(path)
    if not images:
        raise ValueError(f"{path} lists no images")
    missing = [str(image.path) for image in images if not image.path.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{len(missing)} image file(s) named in {path} do not exist: {', '.join(missing[:5])}{more}")
    return images


def _check_body_part(body_part: str, where: str) -> str:
    if body_part not in FILM_PARTS:
        raise ValueError(f"{where}: unknown body part {body_part!r}; choose from {', '.join(FILM_PARTS)}")
    return body_part


def _check_score(value: object, where: str) -> int:
    # Spreadsheets like to write 2 as "2.0"; anything else that is not a whole class is an error.
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or int(number) not in RATINGEN_CLASSES:
        raise ValueError(f"{where}: score {value!r} is not a Ratingen class 0..5")
    return int(number)


def _read_manifest(path: Path) -> list[LabelledImage]:
    images = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from error
            for key in ("file", "body_part"):
                if key not in record:
                    raise ValueError(f"{where}: missing key {key!r}")
            body_part = _check_body_part(record["body_part"], where)
            hands = _manifest_hands(record.get("hands"), where) if body_part == BOTH_HANDS else []
            images.append(
                LabelledImage(
                    (path.parent / record["file"]).resolve(),
                    body_part,
                    record.get("laterality"),
                    *_manifest_joints(record.get("joints"), where),
                    hands=hands,
                )
            )
    return images


def _manifest_joints(joints: dict | None, where: str) -> tuple[dict | None, dict | None]:
    """Scores and centres of one hand's `joints` record, each `None` when empty."""
    if not joints:
        return None, None
    unknown = sorted(set(joints) - set(JOINT_NAMES))
    if unknown:
        raise ValueError(f"{where}: unknown joints {unknown}")
    scores = {
        name: _check_score(joint["score"], f"{where}, {name}")
        for name, joint in joints.items()
        if joint.get("score") is not None
    }
    centers = {
        name: (float(joint["center"][0]), float(joint["center"][1]))
        for name, joint in joints.items()
        if joint.get("center") is not None
    }
    return scores or None, centers or None


def _manifest_hands(hands: list | None, where: str) -> list[LabelledHand]:
    """The labelled hands of a film of both hands, left hand first."""
    if not hands:
        raise ValueError(f"{where}: a {BOTH_HANDS} record needs 'hands', one entry per hand")
    labelled = []
    for hand in hands:
        laterality = hand.get("laterality")
        if laterality not in ("L", "R"):
            raise ValueError(f"{where}: hand laterality {laterality!r} is not L or R")
        labelled.append(LabelledHand(laterality, *_manifest_joints(hand.get("joints"), f"{where}, {laterality}")))
    return _film_hands(labelled, where)


def _film_hands(hands: list[LabelledHand], where: str) -> list[LabelledHand]:
    lateralities = [hand.laterality for hand in hands]
    if len(set(lateralities)) != len(lateralities):
        raise ValueError(f"{where}: a film of both hands labels each hand once, got {'/'.join(lateralities)}")
    return sorted(hands, key=lambda hand: hand.laterality != "L")


def _read_csv(path: Path) -> list[LabelledImage]:
    # utf-8-sig: spreadsheet programs put a byte-order mark in front of the header.
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path} is empty; expected a header with {', '.join(REQUIRED_COLUMNS)}")
    header = text.splitlines()[0]
    try:
        # German spreadsheets write semicolons; sniff only the header, among the separators we document.
        dialect = csv.Sniffer().sniff(header, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)}; found {', '.join(columns)}")
    half_pairs = [j for j in JOINT_NAMES if (f"{j}_x" in columns) != (f"{j}_y" in columns)]
    if half_pairs:
        raise ValueError(f"{path.name}: centre columns need both _x and _y; incomplete for {', '.join(half_pairs)}")
    rows = [(number, _csv_row(path, row, number)) for number, row in enumerate(reader, start=2) if any(_cells(row))]
    return _films(rows, path.name)


def _films(rows: list[tuple[int, LabelledImage]], name: str) -> list[LabelledImage]:
    """One image per file: rows naming the same file are the hands of one film of both hands."""
    by_file: dict[Path, list[tuple[int, LabelledImage]]] = {}
    for number, image in rows:
        by_file.setdefault(image.path, []).append((number, image))
    films = []
    for file, group in by_file.items():
        first = group[0][1]
        if len(group) == 1 and first.body_part != BOTH_HANDS:
            films.append(first)
            continue
        where = f"{name} rows {', '.join(str(number) for number, _ in group)}"
        if any(image.body_part not in (*HAND_PARTS, BOTH_HANDS) for _, image in group):
            raise ValueError(f"{where}: {file.name} is listed more than once; only the hands of a film may be")
        hands = [LabelledHand(image.laterality, image.scores, image.centers) for _, image in group]
        films.append(LabelledImage(file, BOTH_HANDS, None, hands=_film_hands(hands, where)))
    return films


def _cells(row: dict) -> list[str]:
    return [(value or "").strip() for key, value in row.items() if key is not None]


def _csv_row(path: Path, row: dict[str, str | None], number: int) -> LabelledImage:
    where = f"{path.name} row {number}"
    cell = {key: (value or "").strip() for key, value in row.items() if key is not None}
    if not cell["image"]:
        raise ValueError(f"{where}: empty image path")
    laterality = cell["laterality"].upper() or None
    if laterality not in (None, "L", "R"):
        raise ValueError(f"{where}: laterality {cell['laterality']!r} is not L or R")
    body_part = cell.get("body_part", "")
    if body_part:
        _check_body_part(body_part, where)
    elif laterality:
        body_part = LATERALITY_PARTS[laterality]
    else:
        raise ValueError(f"{where}: give a laterality (L or R) or a body_part")
    if body_part == BOTH_HANDS and laterality is None:
        raise ValueError(f"{where}: a {BOTH_HANDS} row labels one hand of the film; give its laterality (L or R)")
    if body_part in HAND_PARTS and laterality not in (None, body_part[0].upper()):
        raise ValueError(f"{where}: laterality {laterality} contradicts body part {body_part}")
    if body_part in HAND_PARTS and laterality is None:
        laterality = body_part[0].upper()
    scores = {joint: _check_score(cell[joint], f"{where}, column {joint}") for joint in JOINT_NAMES if cell[joint]}
    return LabelledImage(
        path=(path.parent / cell["image"]).resolve(),
        body_part=body_part,
        laterality=laterality,
        scores=scores or None,
        centers=_csv_centers(cell, where),
    )


def _csv_centers(cell: dict[str, str], where: str) -> dict[str, tuple[float, float]] | None:
    centers = {}
    for joint in JOINT_NAMES:
        x, y = cell.get(f"{joint}_x", ""), cell.get(f"{joint}_y", "")
        if not x and not y:
            continue
        if not x or not y:
            raise ValueError(f"{where}: {joint} has only one of {joint}_x and {joint}_y")
        try:
            centers[joint] = (float(x), float(y))
        except ValueError as error:
            raise ValueError(f"{where}: {joint} centre ({x!r}, {y!r}) is not a number pair") from error
    return centers or None
