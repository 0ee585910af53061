"""Optuna on a real PostgreSQL server (Debian's, started in a temporary data directory by tests/services.py):
studies starting at once on a new database, and the bad input of that path, each refused before anything is
written. The studies on it (with the MLflow server on PostgreSQL) run in tests/test_cluster_jobs.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import service_env

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"
HOOKS = REPO_ROOT / "tests" / "hooks"

OPEN_AND_CREATE = """
import sys
import optuna
from study.optuna_storage import open_storage
optuna.create_study(study_name=sys.argv[2], storage=open_storage(sys.argv[1]))
"""


def test_studies_opening_a_new_database_at_once_all_create_their_optuna_study(postgres) -> None:
    """Three processes open a database without Optuna's tables at the same moment, as the drivers of studies
    started together do: each creates its study (without the lock in study.optuna_storage, two of three failed
    creating the tables: `duplicate key value violates unique constraint "pg_type_typname_nsp_index"`)."""
    import optuna

    url = postgres.createdb("opened_at_once")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_CREATE, url, f"study-{i}"],
            cwd=REPO_ROOT,
            env=service_env(PYTHONPATH=str(REPO_ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], errors
    assert sorted(optuna.study.get_all_study_names(url)) == ["study-0", "study-1", "study-2"]


def refused(tmp_path: Path, optuna_storage: str, **env: str) -> subprocess.CompletedProcess:
    """A smoke study with `--optuna-storage` that must be refused: exit 2 with nothing written."""
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--space",
            "alignment",
            "--smoke",
            "--name",
            "refused",
            "--results-dir",
            str(tmp_path / "results"),
            "--optuna-storage",
            optuna_storage,
        ],
        cwd=tmp_path,
        env=service_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == [], "something was written"  # no results/, no MLflow or Ray files
    return done


@pytest.mark.parametrize("problem", ["password", "database"])
def test_a_wrong_password_or_database_is_refused_before_anything_is_written(postgres, tmp_path, problem) -> None:
    url = (
        postgres.url("postgres", password="not-the-password")
        if problem == "password"
        else postgres.url("no_such_database")
    )
    done = refused(tmp_path, url)
    assert "cannot connect to the Optuna storage" in done.stderr
    expected = (
        'password authentication failed for user "mpt"'
        if problem == "password"
        else 'database "no_such_database" does not exist'
    )
    assert expected in done.stderr
    assert "not-the-password" not in done.stderr and postgres.password not in done.stderr  # masked


def test_a_missing_driver_names_the_postgres_extra(tmp_path) -> None:
    """psycopg hidden from the driver (tests/hooks): the study says which extra installs it."""
    done = refused(
        tmp_path,
        "postgresql+psycopg://mpt@127.0.0.1:5432/optuna",
        PYTHONPATH=str(HOOKS),
        MPT_TEST_HIDE_MODULES="psycopg,psycopg2",
    )
    assert "PostgreSQL driver psycopg is not installed" in done.stderr
    assert "pip install 'mpt-study[postgres]'" in done.stderr
