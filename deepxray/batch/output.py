"""The registry's table, written film by film so that a run cut short (Ctrl-C, a killed node or machine) leaves a
table to resume from: CSV (the default), JSON lines (`.jsonl`, `.json`) or Parquet (`.parquet`: a folder of part
files, one per batch of films, each written whole under a temporary name and then renamed).

On opening an existing table, resume first mends what a kill can leave: a last line cut in half is dropped, and
so are the rows of a film with fewer rows than its `rows_of_film` (the film is scored again), of a film the scorer
failed on (a timeout, a service that was down) and of a file that could not be read: all are tried again. The
image ids of the films left are the ones a run skips.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from deepxray.batch.rows import COLUMNS, FAILED
from deepxray.labels import JOINT_NAMES

INTEGER_COLUMNS = frozenset({*JOINT_NAMES, "total", "hand", "rotated_deg", "rows_of_film"})
FLOAT_COLUMNS = frozenset({"body_part_probability", "seconds"})
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def format_of(path: Path) -> str:
    return FORMATS.get(path.suffix.lower(), "csv")


class TableError(ValueError):
    """An existing output that cannot be resumed (another layout of columns, another format)."""


def complete_films(rows: list[dict]) -> set[str]:
    """Image ids whose rows are all there (as many as each row's `rows_of_film` says), except films the scorer
    failed on (a timeout, a service that was down): those are tried again."""
    counts = Counter(row["image_id"] for row in rows if row.get("image_id"))
    expected = {row["image_id"]: int(row["rows_of_film"] or 0) for row in rows if row.get("image_id")}
    failed = {row["image_id"] for row in rows if row.get("status") == FAILED}
    return {image for image, count in counts.items() if count == expected[image] and image not in failed}


class Output:
    """An output table opened for appending (see the module's docstring); `done` holds the finished films' ids."""

    def __init__(self, path: Path, overwrite: bool = False):
        self.path, self.format = Path(path), format_of(Path(path))
        if overwrite and self.path.exists():
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = self._resume() if self.path.exists() else set()
        self._file = None
        self._parts = len(list(self.path.glob("part-*.parquet"))) if self.format == "parquet" else 0

    # ----------------------------------------------------------------------------------------------- resume

    def _resume(self) -> set[str]:
        if self.format == "parquet":
            return self._resume_parquet()
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # a line cut in half by a kill
            raw = raw[: raw.rfind(b"\n") + 1]
        text = raw.decode("utf-8")
        if self.format == "csv":
            lines = text.splitlines(keepends=True)
            if lines and next(csv.reader([lines[0]])) != list(COLUMNS):
                raise TableError(
                    f"{self.path} has other columns than this version writes; use --overwrite or another --out"
                )
            rows = list(csv.DictReader(lines))
        else:
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as error:
                raise TableError(f"{self.path} is not JSON lines ({error}); use --overwrite or another --out") from None
        done = complete_films(rows)
        kept = [row for row in rows if row.get("image_id") in done]
        if len(kept) != len(rows) or len(raw) != self.path.stat().st_size:
            self._rewrite(kept)  # the same table without the films cut short
        return done

    def _resume_parquet(self) -> set[str]:
        import pyarrow.parquet as pq

        if not self.path.is_dir():
            raise TableError(f"{self.path} is not a Parquet folder of this tool; use --overwrite or another --out")
        for leftover in self.path.glob("*.tmp"):
            leftover.unlink()  # a part whose writing was cut short; its films are scored again
        parts = {part: pq.read_table(part) for part in sorted(self.path.glob("part-*.parquet"))}
        done = complete_films([row for table in parts.values() for row in
                               table.select(["image_id", "rows_of_film", "status"]).to_pylist()])  # fmt: skip
        for part, table in parts.items():  # rows of films cut short, failed or not read go: they are tried again
            kept = [row for row in table.to_pylist() if row.get("image_id") in done]
            if len(kept) != table.num_rows:
                pq.write_table(as_table(kept), part.with_suffix(".tmp"))
                os.replace(part.with_suffix(".tmp"), part)
        return done

    def _rewrite(self, rows: list[dict]) -> None:
        staging = self.path.with_name(self.path.name + ".tmp")
        with open(staging, "w", encoding="utf-8", newline="") as file:
            self._write(file, rows, header=True)
        os.replace(staging, self.path)

    # ----------------------------------------------------------------------------------------------- append

    def append(self, rows: list[dict]) -> None:
        """Writes the rows of whole films and flushes them to the file (a kill after this loses none of them)."""
        if not rows:
            return
        if self.format == "parquet":
            self._append_parquet(rows)
        else:
            if self._file is None:
                header = not self.path.exists() or self.path.stat().st_size == 0
                self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
                if header and self.format == "csv":
                    csv.writer(self._file).writerow(COLUMNS)
            self._write(self._file, rows, header=False)
            self._file.flush()
        self.done.update(row["image_id"] for row in rows if row.get("image_id"))

    def _write(self, file, rows: list[dict], header: bool) -> None:
        if self.format == "csv":
            writer = csv.DictWriter(file, COLUMNS, extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerows(rows)
        else:
            file.writelines(json.dumps({c: typed(c, row.get(c)) for c in COLUMNS}) + "\n" for row in rows)

    def _append_parquet(self, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        self.path.mkdir(parents=True, exist_ok=True)
        self._parts += 1
        table = as_table(rows)
        part = self.path / f"part-{self._parts:06d}.parquet"
        pq.write_table(table, part.with_suffix(".tmp"))
        os.replace(part.with_suffix(".tmp"), part)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def typed(column: str, value):
    """A cell as its column's type (CSV cells come back as strings; '' is empty)."""
    if value is None or value == "":
        return None
    if column in INTEGER_COLUMNS:
        return int(value)
    if column in FLOAT_COLUMNS:
        return float(value)
    return str(value)


def schema():
    import pyarrow as pa

    def kind(column):
        return pa.int64() if column in INTEGER_COLUMNS else pa.float64() if column in FLOAT_COLUMNS else pa.string()

    return pa.schema([(column, kind(column)) for column in COLUMNS])


def as_table(rows: list[dict]):
    """Rows as a pyarrow Table of the output's schema (every column typed, even when all its cells are empty)."""
    import pyarrow as pa

    return pa.Table.from_pylist([{c: typed(c, row.get(c)) for c in COLUMNS} for row in rows], schema=schema())
