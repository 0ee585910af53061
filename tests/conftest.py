"""Shared fixtures: small data directories in XNLI's local format and cached backbones."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach a model hub
# The commands the tests start (`python study/run.py`, `python -m mpt.train`) import this checkout, as they do
# once it is installed with `pip install -e .`, whatever else the environment has installed
REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

import torch  # noqa: E402

from mpt.backbones import load_backbone  # noqa: E402
from tests.services import postgres  # noqa: E402,F401  (the session's PostgreSQL server, started when asked for)

# In-process tests run small batches, where torch's threads cost more in synchronisation than they gain, and
# badly so on a shared machine (issue 21: two method test files 162 s at the default threads, 28 s at one).
# Trial and CLI processes the tests start set their own threads.
torch.set_num_threads(1)

ROWS = [
    ("A man is playing a guitar on the street.", "A person is making music.", "entailment"),
    ("A man is playing a guitar on the street.", "The man is a famous singer.", "neutral"),
    ("A man is playing a guitar on the street.", "The man is asleep in bed.", "contradiction"),
    ("Two children are building a sandcastle at the beach.", "Kids are at the seaside.", "entailment"),
    ("Two children are building a sandcastle at the beach.", "The children are siblings.", "neutral"),
    ("Two children are building a sandcastle at the beach.", "The children are skiing.", "contradiction"),
    ("A woman is reading a newspaper in a cafe.", "Someone is reading.", "entailment"),
    ("A woman is reading a newspaper in a cafe.", "The woman is waiting for a friend.", "neutral"),
    ("A woman is reading a newspaper in a cafe.", "The woman is swimming in a lake.", "contradiction"),
]


def write_nli(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{p}\t{h}\t{label}\n" for p, h, label in rows), encoding="utf-8")
    return path


@pytest.fixture
def nli_dir(tmp_path: Path) -> Path:
    """en train/dev/test and de dev/test (German rows = English rows with a marker) plus parallel-de.tsv."""
    for split in ("train", "dev", "test"):
        write_nli(tmp_path / f"{split}-en.tsv", ROWS * (3 if split == "train" else 1))
    for split in ("dev", "test"):
        write_nli(tmp_path / f"{split}-de.tsv", [(f"[de] {p}", f"[de] {h}", label) for p, h, label in ROWS])
    (tmp_path / "parallel-de.tsv").write_text(
        "".join(f"{p}\t[de] {p}\n" for p in dict.fromkeys(r[0] for r in ROWS)), encoding="utf-8"
    )
    return tmp_path


# The test modules, longest first (their worker time in a `-n 2` run of the whole suite here, December 2026): under
# pytest-xdist a worker takes the next module whenever it is nearly done, in collection order, so the modules
# that run studies of their own (minutes each) start first and the run does not end with one worker alone on one
# of them. (xdist's own order, most tests first, put the cluster scenario last.) test_study runs the session's
# shared smoke study: second, so that it is ready before the other modules that read it ask for it.
# An outdated list costs time only; modules not in it follow in their usual order. Without xdist nothing changes.
LONGEST_FIRST = (
    "test_cluster_jobs.py",
    "test_study.py",
    "test_faults.py",
    "test_study_resume.py",
    "test_faults_trials.py",
    "test_mlflow_server.py",
    "test_gpu_placement.py",
    "test_ui.py",
    "test_install.py",
    "test_benchmarks.py",
    "test_mpt_backbones.py",
    "test_optuna_storage.py",
    "test_faults_input.py",
    "test_pretrained.py",
    "test_mpt_training.py",
    "test_mlflow_model.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one process runs the files in the order given (the mutation
        return  # check puts a mutant's own test file first)
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's tests keep their order


@pytest.fixture(scope="session")
def tiny_backbone():
    return load_backbone("tiny-xlmr")


@pytest.fixture(scope="session")
def e5_two_layers():
    """The embedded e5-small cut to 2 layers: the linear-head path at test speed."""
    return load_backbone("e5-small", num_layers=2)


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made once: a new store migrates its schema, which takes seconds."""
    from mlflow import MlflowClient

    database = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def mlflow_uri(empty_mlflow_db: Path, tmp_path: Path) -> str:
    """A test's own MLflow SQLite store (a copy of the empty one)."""
    database = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, database)
    return f"sqlite:///{database}"


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """The session's shared smoke study (tests/smoke_studies.py: an MPT configuration wins its search, then a
    confirmation swept over two shot counts), run once for every module that reads it. Read it, never change it.

    Under pytest-xdist (`-n N`) the first worker to ask runs it in the folder the workers share, holding a file
    lock, and stores the finished study; the others wait on the lock and read it back (pytest-xdist's recipe for a
    session fixture that must run once)."""
    from tests.smoke_studies import run_shared_study

    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one process
        return run_shared_study(tmp_path_factory.mktemp("smoke"))
    shared = tmp_path_factory.getbasetemp().parent  # every worker's basetemp is a folder of it
    stored = shared / "smoke-study.pickle"
    with FileLock(shared / "smoke-study.lock"):
        if stored.exists():
            return pickle.loads(stored.read_bytes())
        (shared / "smoke").mkdir()
        study = run_shared_study(shared / "smoke")
        stored.write_bytes(pickle.dumps(study))
        return study
