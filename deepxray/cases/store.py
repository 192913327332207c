"""The case store: scored films kept for review, similar-joint search and retraining (SQLite or PostgreSQL).

`CaseStore` is synchronous and thread-safe (one engine, a connection per call): the ingress calls it from
threads (`asyncio.to_thread`), the CLI directly. Opening a store runs the Alembic migrations to the newest.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from deepxray.cases.database import make_engine, migrate, reading, writing
from deepxray.cases.records import (
    CaseNotFoundError,
    CasePage,
    CaseSummary,
    CurrentReview,
    FilmImage,
    InvalidReviewError,
    JointReview,
    NewCase,
    ReviewEvent,
    SimilarJoint,
    StoredCase,
    StoredJoint,
    utc_now,
)
from deepxray.cases.schema import VECTOR_COLUMN, case_images, case_joints, case_reviews, cases, joints_with_vector
from deepxray.cases.similar import NumpyIndex, rank_in_database, unit

SCORER = "ratingen_score"
DECISIONS = ("accepted", "corrected")
MAX_SCORE = 5
_LONGEST_REVIEWER = 255  # an OpenID Connect `sub` is at most 255 characters


class CaseStore:
    """Cases in a SQL database; see the module's docstring. Use `CaseStore.open(url)`.

    Args:
        engine: From `deepxray.cases.database.make_engine`, its schema migrated.
        use_pgvector: False ranks similar joints with NumPy even where pgvector is there (to compare the two).
    """

    def __init__(self, engine: Engine, use_pgvector: bool = True):
        self._engine = engine
        columns = {column["name"] for column in sa.inspect(engine).get_columns("case_joints")}
        self._has_vector = VECTOR_COLUMN in columns
        self._rank_in_database = self._has_vector and use_pgvector
        self._index = NumpyIndex()

    @classmethod
    def open(cls, url: str, *, use_pgvector: bool = True) -> CaseStore:
        """The store at SQLAlchemy `url` (sqlite:///FILE, postgresql+psycopg://...), migrated to the newest
        schema (a SQLite file and its folder are made). Raises ValueError for an in-memory SQLite URL."""
        engine = make_engine(url)
        try:
            migrate(engine)
            return cls(engine, use_pgvector)
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Close the database connections (the store is not used afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def similarity_method(self) -> str:
        """How `similar` ranks: "pgvector" (in PostgreSQL) or "numpy" (in this process)."""
        return "pgvector" if self._rank_in_database else "numpy"

    def add(self, case: NewCase) -> str:
        """Keep a scored film (its answer, joints with embeddings, image) in one transaction; gives its id."""
        row, joints = _case_row(case), _joint_rows(case, self._has_vector)
        with writing(self._engine) as connection:
            connection.execute(sa.insert(cases), row)
            if case.image is not None:
                image = {"case_id": case.case_id, "kind": case.image.kind, "scale": case.image.scale}
                connection.execute(sa.insert(case_images), {**image, "encoded": case.image.encoded})
            if joints:
                connection.execute(sa.insert(joints_with_vector if self._has_vector else case_joints), joints)
        return case.case_id

    def exists(self, case_id: str) -> bool:
        with reading(self._engine) as connection:
            return _exists(connection, case_id)

    def list_cases(
        self,
        *,
        reviewed: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> CasePage:
        """A page of cases, newest first: stored at or after `since` and before `until`, scored by the model tag
        `model` (name@version), reviewed or not; `total` counts every match. Image blobs are never read."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where = []
        if reviewed is not None:
            where.append(cases.c.reviewed_at.is_not(None) if reviewed else cases.c.reviewed_at.is_(None))
        if since is not None:
            where.append(cases.c.created_at >= since)
        if until is not None:
            where.append(cases.c.created_at < until)
        if model is not None:
            where.append(_scored_by(model))
        columns = [cases.c[name] for name in ("id", "created_at", "models", "body_part", "hands", "total")]
        page = (
            sa.select(*columns, cases.c.reviewed_at, cases.c.reviewer)
            .where(*where)
            .order_by(cases.c.created_at.desc(), cases.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with reading(self._engine) as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(cases).where(*where)).scalar_one()
            rows = connection.execute(page).all()
        items = [
            CaseSummary(
                row.id,
                row.created_at,
                row.models,
                row.body_part,
                row.hands,
                row.total,
                row.reviewed_at is not None,
                row.reviewed_at,
                row.reviewer,
            )
            for row in rows
        ]
        return CasePage(items, total)

    def get(self, case_id: str) -> StoredCase:
        """The case with its joints, their current reviews and the review history. Raises CaseNotFoundError."""
        with reading(self._engine) as connection:
            return _read_case(connection, case_id)

    def image(self, case_id: str) -> FilmImage | None:
        """The film's picture, or None for a case stored without one. Raises CaseNotFoundError."""
        query = sa.select(case_images.c.encoded, case_images.c.kind, case_images.c.scale)
        with reading(self._engine) as connection:
            row = connection.execute(query.where(case_images.c.case_id == case_id)).first()
            if row is None and not _exists(connection, case_id):
                raise CaseNotFoundError(f"There is no case {case_id}.")
        return None if row is None else FilmImage(bytes(row.encoded), row.kind, row.scale)

    def embeddings(self, case_id: str) -> dict[tuple[int, str], np.ndarray]:
        """(hand, joint) -> the scorer's embedding (float32), for the joints that have one."""
        joints = case_joints.c
        query = sa.select(joints.hand, joints.joint, joints.embedding).where(joints.case_id == case_id)
        with reading(self._engine) as connection:
            rows = connection.execute(query.where(joints.embedding.is_not(None))).all()
        return {(row.hand, row.joint): np.frombuffer(row.embedding, dtype="<f4").copy() for row in rows}

    def review(self, case_id: str, reviewer: str, joints: list[JointReview]) -> StoredCase:
        """Record a review of the whole case by `reviewer` (the authenticated subject) and give the case back.

        The joints named get their decision, score and comment ("accepted" takes the model's score, given or
        filled in; "corrected" a grade 0..5, which may equal the model's). The others keep their current state;
        a joint never reviewed counts as accepted by the case's reviewer when the case is exported. Every call
        adds its events to the history and sets the case's reviewer and time; nothing is overwritten.

        Raises:
            CaseNotFoundError: No such case.
            InvalidReviewError: No joints, a joint named twice or not on the case, a bad decision or score.
        """
        if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > _LONGEST_REVIEWER:
            raise InvalidReviewError(f"The reviewer must be a name of 1 to {_LONGEST_REVIEWER} characters.")
        with writing(self._engine) as connection:
            # The case's row locked (PostgreSQL) first: reviews of one case follow each other, so the history's
            # order, its times and the current state agree. SQLite's write lock does the same.
            locked = sa.select(cases.c.id).where(cases.c.id == case_id).with_for_update()
            if connection.execute(locked).first() is None:
                raise CaseNotFoundError(f"There is no case {case_id}.")
            at = utc_now()
            query = sa.select(case_joints.c.id, case_joints.c.hand, case_joints.c.joint, case_joints.c.score)
            stored = {(row.hand, row.joint): row for row in connection.execute(query.where(_of(case_id)))}
            events = _checked_events(joints, stored)
            _save_review(connection, case_id, reviewer, at, events, stored)
            return _read_case(connection, case_id)

    def similar(self, case_id: str, hand: int, joint: str, k: int = 8) -> list[SimilarJoint]:
        """The `k` stored joints of other cases most like `joint` of `hand`, by cosine similarity of the scorer's
        embeddings (same scorer version only), most similar first.

        Raises:
            CaseNotFoundError: No such case.
            InvalidReviewError: The case has no such joint, or no embedding of it.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        joints = case_joints.c
        query = sa.select(joints.id, joints.scorer, joints.embedding).where(
            _of(case_id), joints.hand == hand, joints.joint == joint
        )
        with reading(self._engine) as connection:
            row = connection.execute(query).first()
            if row is None and not _exists(connection, case_id):
                raise CaseNotFoundError(f"There is no case {case_id}.")
        if row is None:
            raise InvalidReviewError(f"The case has no joint {joint} on hand {hand}.")
        vector = None if row.embedding is None else unit(np.frombuffer(row.embedding, dtype="<f4"))
        if vector is None or row.scorer is None:
            raise InvalidReviewError(
                f"Joint {joint} of hand {hand} has no embedding to compare (the scorer gave none)."
            )
        # Rows deleted since the ranking are left out, so ask for more than k, and for more again if need be.
        count = 2 * k + 8
        while True:
            with reading(self._engine) as connection:
                if self._rank_in_database:
                    ranked = rank_in_database(connection, row.scorer, row.id, case_id, count)
                else:
                    ranked = self._index.rank(connection, row.scorer, vector, case_id, count)
                found = _similar_joints(connection, ranked)
            if len(found) >= k or len(ranked) < count:
                return found[:k]
            count *= 2

    def delete(self, case_id: str) -> None:
        """Delete a case: its answer, image, joints and reviews. Raises CaseNotFoundError."""
        with writing(self._engine) as connection:
            deleted = connection.execute(sa.delete(cases).where(cases.c.id == case_id)).rowcount
        self._index.drop()
        if not deleted:
            raise CaseNotFoundError(f"There is no case {case_id}.")

    def delete_all(self) -> int:
        """Delete every case; gives how many there were."""
        with writing(self._engine) as connection:
            deleted = connection.execute(sa.delete(cases)).rowcount
        self._index.drop()
        return deleted

    def iter_cases(self, reviewed_only: bool = False) -> Iterator[StoredCase]:
        """Every case (or every reviewed one), oldest first, read one at a time (for the export)."""
        query = sa.select(cases.c.id).order_by(cases.c.created_at, cases.c.id)
        if reviewed_only:
            query = query.where(cases.c.reviewed_at.is_not(None))
        with reading(self._engine) as connection:
            ids = connection.execute(query).scalars().all()
        for case_id in ids:
            try:
                yield self.get(case_id)
            except CaseNotFoundError:  # deleted while the export ran
                continue


def _case_row(case: NewCase) -> dict:
    answer = {key: value for key, value in case.answer.items() if key != "overlay"}  # a picture, not the answer
    return {
        "id": case.case_id,
        "created_at": case.created_at,
        "models": dict(case.models),
        "scorer": case.models.get(SCORER),
        "answer": answer,
        "body_part": (answer.get("body_part") or {}).get("label", ""),
        "hands": len(answer.get("hands") or []),
        "total": int(answer.get("total", 0)),
        "film_width": int(case.film_size[0]),
        "film_height": int(case.film_size[1]),
        "study_id": case.study_id,
        "series_id": case.series_id,
    }


def _joint_rows(case: NewCase, with_vector: bool) -> list[dict]:
    """The `case_joints` rows of a case: the embedding as float32 bytes (and as a pgvector `vector`)."""
    rows = []
    for joint in case.joints:
        embedding = None if joint.embedding is None else np.asarray(joint.embedding, dtype="<f4")
        rows.append(
            {
                "case_id": case.case_id,
                "hand": joint.hand,
                "laterality": joint.laterality,
                "joint": joint.joint,
                "score": int(joint.score),
                "probabilities": [float(p) for p in joint.probabilities],
                "center_x": float(joint.center[0]),
                "center_y": float(joint.center[1]),
                "scorer": case.models.get(SCORER),
                "embedding": None if embedding is None else embedding.tobytes(),
                **({VECTOR_COLUMN: embedding} if with_vector else {}),
            }
        )
    return rows


def _of(case_id: str):
    return case_joints.c.case_id == case_id


def _exists(connection: Connection, case_id: str) -> bool:
    return connection.execute(sa.select(cases.c.id).where(cases.c.id == case_id)).first() is not None


def _scored_by(model: str):
    """Cases scored with model tag `model`: the scorer's tag is a column of its own (indexed); any other tag is
    found as a string in the models' JSON text (`"name@version"`, quotes included, so only the whole tag)."""
    if model.startswith(f"{SCORER}@"):
        return cases.c.scorer == model
    import json

    return sa.cast(cases.c.models, sa.Text).contains(json.dumps(model), autoescape=True)


def _checked_events(joints: list[JointReview], stored: dict) -> list[dict]:
    """The history rows of a review's joints, after checking each against the case's joints."""
    if not joints:
        raise InvalidReviewError("A review names at least one joint.")
    events, named = [], set()
    for review in joints:
        key = (review.hand, review.joint)
        if key not in stored:
            raise InvalidReviewError(f"The case has no joint {review.joint} on hand {review.hand}.")
        if key in named:
            raise InvalidReviewError(f"Joint {review.joint} of hand {review.hand} is named twice.")
        named.add(key)
        if review.decision not in DECISIONS:
            raise InvalidReviewError(f"A decision is accepted or corrected, not {review.decision!r}.")
        if review.decision == "corrected" and review.score is None:
            raise InvalidReviewError(f"A corrected joint needs its score, 0..5 ({review.joint}, hand {review.hand}).")
        model = stored[key].score
        score = model if review.decision == "accepted" and review.score is None else review.score
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= MAX_SCORE:
            raise InvalidReviewError(f"The score of {review.joint} (hand {review.hand}) must be 0..{MAX_SCORE}.")
        if review.decision == "accepted" and score != model:
            raise InvalidReviewError(
                f"Accepted means the model's score ({model}) for {review.joint} of hand {review.hand}; "
                f"a score of {score} is a correction."
            )
        events.append(
            {
                "hand": review.hand,
                "joint": review.joint,
                "decision": review.decision,
                "score": score,
                "comment": review.comment,
            }
        )
    return events


def _save_review(
    connection: Connection, case_id: str, reviewer: str, at: datetime, events: list[dict], stored: dict
) -> None:
    """The events appended to the history; each joint's current review and the case's reviewer set to them."""
    connection.execute(
        sa.insert(case_reviews), [{"case_id": case_id, "at": at, "reviewer": reviewer, **event} for event in events]
    )
    new = sa.bindparam  # names apart from the columns': SQLAlchemy keeps those for the SET clause
    current = {"review_decision": new("decision_"), "review_score": new("score_"), "review_comment": new("comment_")}
    connection.execute(
        sa.update(case_joints)
        .where(case_joints.c.id == new("row_id"))
        .values(**current, reviewer=reviewer, reviewed_at=at),
        [
            {
                "row_id": stored[(event["hand"], event["joint"])].id,
                **{f"{key}_": event[key] for key in ("decision", "score", "comment")},
            }
            for event in events
        ],
    )
    connection.execute(sa.update(cases).where(cases.c.id == case_id).values(reviewed_at=at, reviewer=reviewer))


def _read_case(connection: Connection, case_id: str) -> StoredCase:
    row = connection.execute(
        sa.select(cases, case_images.c.kind.label("image_kind"))
        .outerjoin(case_images, case_images.c.case_id == cases.c.id)
        .where(cases.c.id == case_id)
    ).first()
    if row is None:
        raise CaseNotFoundError(f"There is no case {case_id}.")
    joints = connection.execute(
        sa.select(*(column for column in case_joints.c if column.name != "embedding"))
        .where(_of(case_id))
        .order_by(case_joints.c.id)
    ).all()
    history = connection.execute(
        sa.select(case_reviews).where(case_reviews.c.case_id == case_id).order_by(case_reviews.c.id)
    ).all()
    return StoredCase(
        case_id=row.id,
        created_at=row.created_at,
        models=row.models,
        answer=row.answer,
        film_size=(row.film_width, row.film_height),
        study_id=row.study_id,
        series_id=row.series_id,
        image_kind=row.image_kind,
        joints=[_stored_joint(joint) for joint in joints],
        reviewed=row.reviewed_at is not None,
        reviewed_at=row.reviewed_at,
        reviewer=row.reviewer,
        history=[
            ReviewEvent(event.at, event.reviewer, event.hand, event.joint, event.decision, event.score, event.comment)
            for event in history
        ],
    )


def _stored_joint(row) -> StoredJoint:
    review = None
    if row.review_decision is not None:
        review = CurrentReview(row.review_decision, row.review_score, row.review_comment, row.reviewer, row.reviewed_at)
    return StoredJoint(
        row.hand, row.laterality, row.joint, row.score, list(row.probabilities), (row.center_x, row.center_y), review
    )


def _similar_joints(connection: Connection, ranked: list[tuple[int, float]]) -> list[SimilarJoint]:
    """The rows of the ranked joints that still exist, in rank order."""
    if not ranked:
        return []
    joints = case_joints.c
    query = sa.select(
        joints.id,
        joints.case_id,
        joints.hand,
        joints.laterality,
        joints.joint,
        joints.score,
        joints.review_score,
        joints.review_decision,
    )
    rows = {row.id: row for row in connection.execute(query.where(joints.id.in_([row_id for row_id, _ in ranked])))}
    return [
        SimilarJoint(
            row.case_id,
            row.hand,
            row.laterality,
            row.joint,
            row.score,
            row.review_score,
            row.review_decision,
            similarity,
        )
        for row_id, similarity in ranked
        if (row := rows.get(row_id)) is not None
    ]
