"""Database setup: migrations are safe when several processes start at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

OPEN = "import sys; from tracker.db import Database; Database.open(sys.argv[1]).close(); print('ok')"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_starting_together_on_a_new_database_all_migrate_it(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]


def test_head_revision_names_the_newest_migration():
    """A start-up skips alembic when the database is stamped HEAD_REVISION: it must be alembic's head."""
    from alembic.script import ScriptDirectory

    from tracker.db import HEAD_REVISION, MIGRATIONS

    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD_REVISION


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_current_database_opens_without_loading_alembic(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'current.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    from tracker.db import Database

    Database.open(url).close()  # creates and migrates it
    reopen = ("import sys; from tracker.db import Database; Database.open(sys.argv[1]).close(); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", reopen, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_database_behind_head_is_migrated(tmp_path):
    """An older stamp (a database from before the newest migration) still gets the missing migrations."""
    from sqlalchemy import create_engine, inspect, text

    from tracker.db import HEAD_REVISION, Database

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Database.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE dispatches"))
        conn.execute(text("ALTER TABLE targets DROP COLUMN page_digest"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0002_matches'"))
    Database.open(url).close()
    assert "dispatches" in inspect(engine).get_table_names()
    assert "page_digest" in {c["name"] for c in inspect(engine).get_columns("targets")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
    engine.dispose()


def _schema(engine) -> dict:  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect

    i = inspect(engine)
    out = {}
    for t in sorted(i.get_table_names()):
        out[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in i.get_columns(t)],
            "indexes": sorted((x["name"], tuple(x["column_names"]), bool(x["unique"])) for x in i.get_indexes(t)),
            "unique": sorted((x["name"], tuple(x["column_names"])) for x in i.get_unique_constraints(t)),
            "primary_key": i.get_pk_constraint(t)["constrained_columns"],
            "foreign_keys": sorted((tuple(x["constrained_columns"]), x["referred_table"],
                                    tuple(x["referred_columns"]), str(x.get("options"))) for x in i.get_foreign_keys(t)),
        }
    if engine.dialect.name == "postgresql":  # storage parameters (fillfactor) of the tables
        from sqlalchemy import text

        with engine.connect() as conn:
            out["(reloptions)"] = sorted(conn.execute(text(
                "SELECT relname, reloptions FROM pg_class WHERE relkind = 'r' AND pg_table_is_visible(oid) "
                "AND reloptions IS NOT NULL")).all())
    return out


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_new_database_created_from_the_models_has_the_schema_the_migrations_build(backend, request, tmp_path):
    """Database.open creates a new database from the models and stamps it; replaying every migration on
    another new database must give exactly the same tables, columns, types, defaults, keys and indexes."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from tracker.db import HEAD_REVISION, Database, alembic_config

    if backend == "sqlite":
        created_url, migrated_url = (f"sqlite:///{tmp_path / 'created.db'}", f"sqlite:///{tmp_path / 'migrated.db'}")
    else:
        created_url, migrated_url = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_url2")
    Database.open(created_url).close()
    migrated = create_engine(migrated_url)
    with migrated.begin() as conn:
        cfg = alembic_config(migrated)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    created = create_engine(created_url)
    assert _schema(created) == _schema(migrated)
    if backend == "postgres":
        assert _schema(created)["(reloptions)"] == [("observations", ["fillfactor=90"]), ("targets", ["fillfactor=50"])]
    with created.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
    created.dispose()
    migrated.dispose()
