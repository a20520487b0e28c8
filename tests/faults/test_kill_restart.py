"""SIGKILL in the middle of checks and of sending, then restart (scripts/kill_restart_loop.py at small
scale): no observation lost or half-written, no run counted twice, no e-mail lost or sent twice.
SIGKILL in the middle of SMTP DATA at a chosen point is tests/faults/test_smtp_faults.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_loop(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, str(ROOT / "scripts/kill_restart_loop.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def figures(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if line and not line.startswith(" "))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_random_sigkills_during_checks_and_sends_lose_and_double_nothing(backend, request):
    args = ["--kills", "5", "--seed", "7"]
    if backend == "postgres":
        args += ["--database", request.getfixturevalue("pg_url")]
    proc = run_loop(*args)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "observations lost: 0, half-written: 0, runs counted twice: 0" in out
    assert "e-mails lost: 0, e-mails duplicated: 0" in out
    assert "unreported: 0; child tracebacks: 0" in out
    assert "RESULT: PASS" in out
