"""Ranking stored joints by the cosine similarity of their embeddings to one joint's.

Two ways, one answer: `NumpyIndex` keeps each scorer version's embeddings in memory (SQLite, and PostgreSQL
without pgvector); `rank_in_database` lets PostgreSQL's pgvector rank them (`<=>`, cosine distance). Both give
candidates only, best first with ties by row id: the store reads the candidates' rows afterwards, so a joint
deleted meanwhile (by this process or another) is never returned.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from deepxray.cases.schema import VECTOR_COLUMN, case_joints, joints_with_vector


def unit(vector: np.ndarray) -> np.ndarray | None:
    """`vector` scaled to length 1 (float32), or None for a zero vector (it points nowhere)."""
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else None


def top(similarity: np.ndarray, ids: np.ndarray, count: int) -> list[tuple[int, float]]:
    """The `count` best (id, similarity), highest similarity first, equal ones by id."""
    if len(similarity) > count:
        keep = np.argpartition(-similarity, count - 1)[:count]
        similarity, ids = similarity[keep], ids[keep]
    order = np.lexsort((ids, -similarity))
    return [(int(ids[i]), float(similarity[i])) for i in order]


@dataclass
class _Matrix:
    """One scorer version's embeddings as rows of unit vectors (grown in place: capacity doubles), and which
    database rows it has read: up to `last_id`, `seen` of them with ids summing to `id_sum`."""

    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    case_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, "<U32"))
    size: int = 0
    last_id: int = 0
    seen: int = 0
    id_sum: int = 0

    def add(self, rows: list[tuple[int, str, bytes]]) -> None:
        """Rows (id, case id, float32 embedding) read from the database, in id order."""
        if not rows:
            return
        self.last_id = rows[-1][0]
        self.seen += len(rows)
        self.id_sum += sum(row[0] for row in rows)
        vectors = [(row_id, case_id, unit(np.frombuffer(blob, dtype="<f4"))) for row_id, case_id, blob in rows]
        if self.size == 0:  # the first vectors decide the size
            dim = next((len(vector) for *_, vector in vectors if vector is not None), 0)
            self.vectors = np.zeros((len(self.ids), dim), np.float32)
        # One scorer version gives one size; a zero vector points nowhere: neither can be ranked.
        vectors = [row for row in vectors if row[2] is not None and len(row[2]) == self.vectors.shape[1]]
        end = self.size + len(vectors)
        if end > len(self.ids):
            capacity = max(end, 2 * len(self.ids), 64)
            self.vectors = np.resize(self.vectors, (capacity, self.vectors.shape[1]))
            self.ids = np.resize(self.ids, capacity)
            self.case_ids = np.resize(self.case_ids, capacity)
        if vectors:
            self.ids[self.size : end], self.case_ids[self.size : end], self.vectors[self.size : end] = zip(
                *vectors, strict=True
            )
        self.size = end


class NumpyIndex:
    """The embeddings of each scorer version in memory, refreshed with the rows added since the last look.

    A refresh reads only rows with an id above the last one seen; the count and sum of the ids below it, checked
    each time, notice rows deleted by another process or committed late (PostgreSQL hands out ids before commit)
    and make it read everything again. `drop` forgets everything (after a delete here). Thread-safe.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._matrices: dict[str, _Matrix] = {}

    def drop(self) -> None:
        with self._lock:
            self._matrices.clear()

    def rank(
        self, connection: Connection, scorer: str, query: np.ndarray, exclude_case: str, count: int
    ) -> list[tuple[int, float]]:
        """The `count` best (joint row id, similarity) of `scorer`'s joints outside case `exclude_case`."""
        with self._lock:
            matrix = self._refresh(connection, scorer)
            if matrix.size == 0 or matrix.vectors.shape[1] != len(query):
                return []
            similarity = matrix.vectors[: matrix.size] @ query
            outside = matrix.case_ids[: matrix.size] != exclude_case
            return top(similarity[outside], matrix.ids[: matrix.size][outside], count)

    def _refresh(self, connection: Connection, scorer: str) -> _Matrix:
        joints = case_joints.c
        mine = [joints.scorer == scorer, joints.embedding.is_not(None)]
        matrix = self._matrices.get(scorer, _Matrix())
        seen = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(joints.id), 0)).where(
            *mine, joints.id <= matrix.last_id
        )
        count, id_sum = connection.execute(seen).one()
        if (count, int(id_sum)) != (matrix.seen, matrix.id_sum):
            matrix = _Matrix()
        new = sa.select(joints.id, joints.case_id, joints.embedding).where(*mine, joints.id > matrix.last_id)
        matrix.add([tuple(row) for row in connection.execute(new.order_by(joints.id))])
        self._matrices[scorer] = matrix
        return matrix


def rank_in_database(
    connection: Connection, scorer: str, query_id: int, exclude_case: str, count: int
) -> list[tuple[int, float]]:
    """As `NumpyIndex.rank`, by pgvector: the query is joint row `query_id`'s own vector."""
    joints = joints_with_vector.c
    vector = joints[VECTOR_COLUMN]
    query = sa.select(vector).where(joints.id == query_id).scalar_subquery()
    distance = vector.cosine_distance(query)
    ranked = (
        sa.select(joints.id, (1 - distance).label("similarity"))
        .where(
            joints.scorer == scorer,
            joints.case_id != exclude_case,
            vector.is_not(None),
            sa.func.vector_norm(vector) > 0,  # a zero vector has no direction (its distance is NaN)
        )
        .order_by(distance, joints.id)
        .limit(count)
    )
    return [(int(row_id), float(similarity)) for row_id, similarity in connection.execute(ranked)]
