"""Alembic's entry point for the case store: migrate the connection the store hands over (`deepxray.cases.
database.migrate`, inside its transaction), or connect to `sqlalchemy.url` (`alembic_config(url)`)."""

from __future__ import annotations

from alembic import context

from deepxray.cases.schema import VERSION_TABLE, metadata


def _run(connection) -> None:
    # Batch mode: SQLite alters a table by copying it, which later migrations need for most changes.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise SystemExit("the case store's migrations look at the database (pgvector): run them online")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from deepxray.cases.database import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


_main()
