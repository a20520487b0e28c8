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
