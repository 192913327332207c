"""The case store: scored films kept for clinician review, similar-joint search and export back to training.

`records` (plain dataclasses, no database) is what the ingress builds and the store gives back; `store.CaseStore`
keeps cases in SQLite or PostgreSQL (`schema`, `database`, Alembic `migrations`), `similar` ranks joints by their
embeddings, `export` writes reviewed cases as a training manifest. The store and the export are imported lazily,
so `deepxray.cases.records` costs no SQLAlchemy import.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"CaseStore": "deepxray.cases.store", "export_cases": "deepxray.cases.export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
