"""The case store: cases, their images, joints (with embeddings and current review) and review history.

On PostgreSQL with the pgvector extension available, `case_joints` also gets `embedding_vector`, so the database
ranks similar joints itself; without it (or without the right to create the extension) the store ranks with NumPy.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def _case_id() -> sa.Column:
    return sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("scorer", sa.String(200), nullable=True),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("body_part", sa.String(32), nullable=False),
        sa.Column("hands", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("film_width", sa.Integer(), nullable=False),
        sa.Column("film_height", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(64), nullable=True),
        sa.Column("series_id", sa.String(64), nullable=True),
        sa.Column("reviewed_at", _TIME, nullable=True),
        sa.Column("reviewer", sa.String(255), nullable=True),
    )
    op.create_index("ix_cases_created_at", "cases", ["created_at"])
    op.create_index("ix_cases_scorer", "cases", ["scorer"])
    op.create_table(
        "case_images",
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("encoded", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "case_joints",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        _case_id(),
        sa.Column("hand", sa.Integer(), nullable=False),
        sa.Column("laterality", sa.String(1), nullable=False),
        sa.Column("joint", sa.String(8), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("center_x", sa.Float(), nullable=False),
        sa.Column("center_y", sa.Float(), nullable=False),
        sa.Column("scorer", sa.String(200), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("review_decision", sa.String(16), nullable=True),
        sa.Column("review_score", sa.Integer(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(255), nullable=True),
        sa.Column("reviewed_at", _TIME, nullable=True),
        sa.UniqueConstraint("case_id", "hand", "joint", name="uq_case_joints_case_hand_joint"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_case_joints_case_id", "case_joints", ["case_id"])
    op.create_index("ix_case_joints_scorer", "case_joints", ["scorer"])
    op.create_table(
        "case_reviews",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        _case_id(),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("hand", sa.Integer(), nullable=False),
        sa.Column("joint", sa.String(8), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_case_reviews_case_id", "case_reviews", ["case_id"])
    if op.get_bind().dialect.name == "postgresql" and _pgvector():
        from pgvector.sqlalchemy import Vector

        # No dimension and no index: scorer versions may differ in embedding size, and an exact scan over the
        # joints of one scorer version is quick at the size of a research collection.
        op.add_column("case_joints", sa.Column("embedding_vector", Vector(), nullable=True))


def _pgvector() -> bool:
    """Whether the `vector` extension is in the database, creating it where it is available and allowed."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first():
        return True
    if not bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first():
        return False
    try:
        with bind.begin_nested():  # a refusal (no right to create extensions) must not end the migration
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError:
        return False
    return True


def downgrade() -> None:
    # The `vector` extension stays: other tables may use it, and dropping it needs rights the store may not have.
    op.drop_table("case_reviews")
    op.drop_table("case_joints")
    op.drop_table("case_images")
    op.drop_table("cases")
