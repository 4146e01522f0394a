"""The subprocess side of tests/conftest.py's ``_new_mlflow_stores_copied``.

The suite puts this directory on the PYTHONPATH of the commands it runs as processes
(``nextbest train`` into a fresh models directory, a held decision, a server), with
``PYTEST_NEXTBEST_MLFLOW_TEMPLATE`` naming the SQLite MLflow store MLflow made once in
the suite's worker (not a NEXTBEST_ variable: the tests drop those from the
environments they give commands). Where MLflow would make a new SQLite store in such
a process (at the same point, and only there), the store is filled with a copy of the
template through SQLite's backup API: the same tables, indexes and schema revision,
where MLflow's migrations took 2 s of CPU (9 s on a loaded machine) per command.
Without the template (not made yet), on a server's store, or should the copy fail,
MLflow makes the store as before. Nothing is imported here until MLflow's store
module is: other Python processes start as they did.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TEMPLATE_ENV = "PYTEST_NEXTBEST_MLFLOW_TEMPLATE"
_STORE_MODULE = "mlflow.store.db.utils"


def copy_template(engine: Any, template: Path) -> bool:
    """Fill the new SQLite store of ``engine`` with a copy of ``template``; False
    (nothing done) where that is not a new SQLite file store or the copy failed."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        return False
    if not template.is_file():
        return False
    from sqlalchemy.exc import DBAPIError

    try:
        raw = engine.raw_connection()
        try:
            with contextlib.closing(sqlite3.connect(template)) as source:
                source.backup(raw.driver_connection)
        finally:
            raw.close()
    except (sqlite3.Error, DBAPIError, OSError):
        return False
    return True


def _patch(utils: ModuleType, template: Path) -> None:
    made_by_mlflow = utils._initialize_tables

    def initialize_tables(engine: Any) -> None:
        if not copy_template(engine, template):
            made_by_mlflow(engine)

    utils._initialize_tables = initialize_tables  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches MLflow's store module once it has run (its importers then take the
    patched function, as ``from ... import _initialize_tables`` does)."""

    def __init__(self, template: Path) -> None:
        self.template = template

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _STORE_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, template = spec.loader, self.template

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)  # type: ignore[attr-defined]
                _patch(module, template)

        spec.loader = Loader()
        return spec


if os.environ.get(TEMPLATE_ENV):
    sys.meta_path.insert(0, _PatchOnImport(Path(os.environ[TEMPLATE_ENV])))
