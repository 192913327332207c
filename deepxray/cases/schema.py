"""The case store's tables (SQLAlchemy Core), as migration 0001 creates them.

Four tables: `cases` (the answer and what a listing shows), `case_images` (the film's PNG, apart so listings and
case views never read it), `case_joints` (one row per scored joint: the model's grade, the embedding, the current
review) and `case_reviews` (every review event; nothing is overwritten). Nothing identifies a patient: case ids
are random, study and series ids salted pseudonyms, reviewers the authenticated subject (a key id or token `sub`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector

# Alembic's own table, under a name of ours: a database shared with another Alembic project keeps both histories.
VERSION_TABLE = "case_store_version"

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware datetime, always given back in UTC: SQLite keeps no time zone, so UTC is written there."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # a naive time is taken as UTC (what the service writes)
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Ids of joints and review events only ever grow (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): the
# similarity cache loads rows newer than the last id it saw, which a reused id would slip past.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("models", sa.JSON(), nullable=False),
    sa.Column("scorer", sa.String(200), nullable=True, index=True),  # the ratingen_score tag, name@version
    sa.Column("answer", sa.JSON(), nullable=False),
    sa.Column("body_part", sa.String(32), nullable=False),
    sa.Column("hands", sa.Integer(), nullable=False),
    sa.Column("total", sa.Integer(), nullable=False),  # the answer's top-level total, for listings
    sa.Column("film_width", sa.Integer(), nullable=False),
    sa.Column("film_height", sa.Integer(), nullable=False),
    sa.Column("study_id", sa.String(64), nullable=True),
    sa.Column("series_id", sa.String(64), nullable=True),
    sa.Column("reviewed_at", UTCDateTime(), nullable=True),
    sa.Column("reviewer", sa.String(255), nullable=True),
)

case_images = sa.Table(
    "case_images",
    metadata,
    sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("scale", sa.Float(), nullable=False),
    sa.Column("encoded", sa.LargeBinary(), nullable=False),
)

case_joints = sa.Table(
    "case_joints",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("hand", sa.Integer(), nullable=False),
    sa.Column("laterality", sa.String(1), nullable=False),
    sa.Column("joint", sa.String(8), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False),
    sa.Column("probabilities", sa.JSON(), nullable=False),
    sa.Column("center_x", sa.Float(), nullable=False),
    sa.Column("center_y", sa.Float(), nullable=False),
    sa.Column("scorer", sa.String(200), nullable=True, index=True),
    sa.Column("embedding", sa.LargeBinary(), nullable=True),  # float32, little-endian
    sa.Column("review_decision", sa.String(16), nullable=True),
    sa.Column("review_score", sa.Integer(), nullable=True),
    sa.Column("review_comment", sa.Text(), nullable=True),
    sa.Column("reviewer", sa.String(255), nullable=True),
    sa.Column("reviewed_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("case_id", "hand", "joint", name="uq_case_joints_case_hand_joint"),
    sqlite_autoincrement=True,
)

case_reviews = sa.Table(
    "case_reviews",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("reviewer", sa.String(255), nullable=False),
    sa.Column("hand", sa.Integer(), nullable=False),
    sa.Column("joint", sa.String(8), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False),
    sa.Column("comment", sa.Text(), nullable=True),
    sqlite_autoincrement=True,
)

# PostgreSQL with pgvector only: the embedding again as a `vector`, so the database ranks by cosine distance.
# Migration 0001 adds the column only where the extension is available, so it is a lightweight table clause over
# `case_joints` (every column and this one), not a column of the table every database has.
VECTOR_COLUMN = "embedding_vector"
joints_with_vector = sa.table(
    "case_joints",
    *(sa.column(column.name, column.type) for column in case_joints.columns),
    sa.column(VECTOR_COLUMN, Vector()),
)
