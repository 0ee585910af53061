"""Bad input to `study/run.py`: each case exits non-zero with a message naming the problem and the fix,
and leaves an existing study's results folder and MLflow store byte-for-byte as they were.

One small study is run for real (a subprocess); the cases then call `study.run.main` in this process,
the very function `python study/run.py` exits with, so that 20 cases do not each pay for importing torch,
Ray and MLflow. Ray must never start: a case that gets that far fails the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from mpt.checkpoint import manifest_path
from study import run as study_run
from study import tuner as study_tuner
from tests.services import free_port
from tests.without_torch import run_without_torch

REPO_ROOT = Path(__file__).resolve().parent.parent


RUN = REPO_ROOT / "study" / "run.py"
MINI = REPO_ROOT / "mpt" / "data" / "mini"
EXISTING = "existing"
# the smallest complete study: the two reference trials, one epoch each
EXISTING_ARGS = [
    "--space",
    "alignment",
    "--smoke",
    "--name",
    EXISTING,
    "--num-samples",
    "2",
    "--set",
    "epochs=1",
    "--no-confirm",
    "--max-concurrent",  # one trial process: what this study checks needs no trials at once
    "1",
]
NEW = ["--space", "alignment", "--smoke", "--name", "another"]  # a new study next to the existing one


@pytest.fixture(scope="module")
def existing_study(tmp_path_factory) -> Path:
    """A finished study in its own working directory: results/existing, results/ray, results/mlflow.db."""
    cwd = tmp_path_factory.mktemp("existing")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(RUN), *EXISTING_ARGS], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert list((cwd / "results" / "ray" / EXISTING).glob("*/checkpoint_*/state.pt"))
    return cwd


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> SHA-256 of its bytes)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- data folders with one defect each ------------------------------------------------------------------


def data_folder(root: Path) -> Path:
    """A valid local data folder for the smoke languages (en source; de, fr targets), parallel files included."""
    folder = root / "data"
    folder.mkdir()
    for name in [
        "train-en.tsv",
        *(f"{split}-{lang}.tsv" for split in ("dev", "test") for lang in ("en", "de", "fr")),
        "parallel-de.tsv",
        "parallel-fr.tsv",
    ]:
        shutil.copy(MINI / name, folder / name)
    return folder


def with_line(path: Path, number: int, line: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def missing_column(root: Path) -> list[str]:
    folder = data_folder(root)
    with_line(folder / "train-en.tsv", 5, "A premise without its hypothesis.\tentailment")
    return ["--set", f"data={folder}"]


def bad_label(root: Path) -> list[str]:
    folder = data_folder(root)
    with_line(folder / "dev-de.tsv", 3, "Ein Mann spielt Gitarre.\tJemand macht Musik.\tprobably")
    return ["--set", f"data={folder}"]


def empty_file(root: Path) -> list[str]:
    folder = data_folder(root)
    (folder / "test-fr.tsv").write_text("", encoding="utf-8")
    return ["--set", f"data={folder}"]


def unpaired_parallel(root: Path) -> list[str]:
    folder = data_folder(root)
    with_line(folder / "parallel-fr.tsv", 7, "This English sentence lost its French translation.")
    return ["--set", f"parallel={folder}"]


def storage_not_writable(root: Path) -> list[str]:
    (root / "a-file").write_text("not a folder")  # root runs the tests too: a mode bit would not stop it
    return ["--storage-path", str(root / "a-file" / "ray")]


def mlflow_unreachable(root: Path) -> list[str]:
    return ["--mlflow-tracking-uri", f"http://127.0.0.1:{free_port()}"]


# case id -> (arguments, or a function making them in a scratch folder; problem fragments; fix fragments)
CASES: dict[str, tuple[list[str] | Callable[[Path], list[str]], list[str], list[str]]] = {
    "unknown_space": (
        ["--space", "nope", "--smoke"],
        ["unknown search space 'nope'"],
        ["choose one of", "alignment", "translator"],
    ),
    "unknown_backbone": (
        [*NEW, "--set", "backbone=no-such-backbone"],
        ["unknown backbone 'no-such-backbone'"],
        ["use 'e5-small'", "--set backbone="],
    ),
    "backbone_too_shallow": (
        [*NEW, "--set", "num_layers=99"],
        ["num_layers=99", "has only 12 layers"],
        ["--set num_layers=N with N in [1, 12]"],
    ),
    "unknown_language": (
        [*NEW, "--set", "target_languages=de,xx"],
        ["'xx' is not in", "dev-xx.tsv"],
        ["choose languages that exist"],
    ),
    "unknown_config_field": (
        [*NEW, "--set", "learning_rat=0.1"],
        ["unknown config field 'learning_rat'"],
        ["allowed fields are", "learning_rate"],
    ),
    "data_file_missing_a_column": (
        [*NEW],
        ["train-en.tsv, line 5", "2 tab-separated field(s), expected 3"],
        ["check for a missing column"],
    ),
    "bad_label": (
        [*NEW],
        ["dev-de.tsv, line 3", "unknown label 'probably'"],
        ["use 0/1/2 or entailment/neutral/contradiction"],
    ),
    "empty_data_file": ([*NEW], ["test-fr.tsv is empty"], ["needs one premise/hypothesis/label example per line"]),
    "parallel_lines_do_not_pair_up": (
        [*NEW],
        ["parallel-fr.tsv, line 7", "1 tab-separated field(s), expected 2"],
        ["check for a missing column or a stray tab"],
    ),
    "too_many_shots_for_the_data": (
        [*NEW, "--set", "shots_per_class=500"],
        ["shots_per_class=500"],
        ["lower shots_per_class to at most"],
    ),
    "storage_path_not_writable": (
        [*NEW],
        ["is not writable", "is a file, not a folder"],
        ["choose a folder you can write"],
    ),
    "mlflow_tracking_uri_unreachable": (
        [*NEW],
        ["cannot reach the MLflow tracking server", "Connection refused"],
        ["start it", "leave --mlflow-tracking-uri out"],
    ),
    "optuna_storage_unreachable": (
        [*NEW, "--optuna-storage", "sqlite:////no/such/folder/optuna.db"],
        ["cannot connect to the Optuna storage", "sqlite:////no/such/folder"],
        ["give a reachable database URL", "journal file path"],
    ),
    "zero_num_samples": ([*NEW, "--num-samples", "0"], ["--num-samples 0 is too small"], ["use at least 2"]),
    "negative_num_samples": ([*NEW, "--num-samples", "-3"], ["--num-samples -3 is too small"], ["use at least 2"]),
    "alignment_weight_above_one": (
        [*NEW, "--set", "alignment_weight=1.5"],
        ["'alignment_weight' = 1.5 is invalid"],
        ["allowed a number in [0, 1]"],
    ),
    "alignment_weight_negative": (
        [*NEW, "--set", "alignment_weight=-0.2"],
        ["'alignment_weight' = -0.2 is invalid"],
        ["allowed a number in [0, 1]"],
    ),
    "existing_name_without_resume": (
        ["--space", "alignment", "--smoke", "--name", EXISTING],
        [f"study '{EXISTING}' already exists"],
        ["--resume", "new `--name`"],
    ),
    "resume_of_a_study_that_does_not_exist": (
        ["--space", "alignment", "--smoke", "--name", "ghost", "--resume"],
        ["nothing to resume", "no study 'ghost'"],
        ["start it without --resume"],
    ),
}
DATA_DEFECTS = {
    "data_file_missing_a_column": missing_column,
    "bad_label": bad_label,
    "empty_data_file": empty_file,
    "parallel_lines_do_not_pair_up": unpaired_parallel,
    "storage_path_not_writable": storage_not_writable,
    "mlflow_tracking_uri_unreachable": mlflow_unreachable,
}


def refuse_to_start_ray(address) -> None:
    raise AssertionError("bad input got past validation: the study was about to start Ray")


def run_refused(argv: list[str], cwd: Path, monkeypatch, capsys) -> str:
    """Run the CLI on `argv` in `cwd`; assert it exits 2 and changed nothing under results/; return stderr."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(study_tuner, "start_ray", refuse_to_start_ray)
    before = snapshot(cwd / "results")
    capsys.readouterr()
    code = study_run.main(argv)
    err = capsys.readouterr().err
    assert code == study_run.EXIT_BAD_INPUT, err[-3000:]
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(cwd / "results") == before, "bad input changed the existing study's files"
    return err


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_changes_nothing(
    case: str, existing_study: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    argv, problem, fix = CASES[case]
    if case in DATA_DEFECTS:
        argv = [*argv, *DATA_DEFECTS[case](tmp_path)]
    err = run_refused(list(argv), existing_study, monkeypatch, capsys)
    for fragment in [*problem, *fix]:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not (existing_study / "results" / "another").exists()
    assert not (tmp_path / "a-file" / "ray").exists()


@pytest.mark.slow
def test_resume_with_a_damaged_checkpoint_is_refused_and_changes_nothing(
    existing_study: Path, monkeypatch, capsys
) -> None:
    checkpoint = sorted((existing_study / "results" / "ray" / EXISTING).glob("*/checkpoint_*/state.pt"))[0]
    intact = checkpoint.read_bytes()
    assert manifest_path(checkpoint).is_file()  # Ray Tune kept the manifest the trial wrote beside it
    checkpoint.write_bytes(intact[: len(intact) // 2])  # a copy cut short, as by a full disk
    resume = ["--space", "alignment", "--name", EXISTING, "--resume"]
    try:
        err = run_refused(resume, existing_study, monkeypatch, capsys)
        before = snapshot(existing_study / "results")
        without_torch = run_without_torch(RUN, [resume], existing_study)  # the same, in a process without torch
        assert snapshot(existing_study / "results") == before
    finally:
        checkpoint.write_bytes(intact)
    assert "trial checkpoint(s) are damaged" in err and checkpoint.parent.parent.name in err
    assert "Put back intact copies" in err and "delete each damaged state.pt and run --resume again" in err
    assert without_torch["attempted"] == [] and without_torch["outcomes"][0]["code"] == 2
    assert without_torch["outcomes"][0]["err"] == err


@pytest.mark.slow
def test_resume_with_damaged_settings_is_refused_and_changes_nothing(existing_study: Path, monkeypatch, capsys) -> None:
    settings = existing_study / "results" / EXISTING / "study.json"
    intact = settings.read_bytes()
    settings.write_bytes(intact[: len(intact) // 3])
    try:
        err = run_refused(["--space", "alignment", "--name", EXISTING, "--resume"], existing_study, monkeypatch, capsys)
    finally:
        settings.write_bytes(intact)
    assert f"{settings} is damaged" in err and "restore it from a backup" in err and "new --name" in err


def test_help_and_every_preflight_refusal_run_without_torch_or_transformers(tmp_path: Path) -> None:
    """`--help` and the refusals of the command line, the stores, the data and the backbone: in a process where
    importing torch or transformers fails, each exits 2 with its message (0 for --help), writing nothing; the
    script turns main's value into the exit status. (A damaged checkpoint on --resume: the test above.)"""
    (tmp_path / "a-file").write_text("not a folder")
    bad_labels = bad_label(tmp_path)  # a data folder whose dev-de.tsv has an unknown label
    (tmp_path / "results" / "taken").mkdir(parents=True)  # an existing study's folder
    (tmp_path / "results" / "broken").mkdir()
    (tmp_path / "results" / "broken" / "study.json").write_text('{"name": "broken", "space": "alig')
    before = snapshot(tmp_path)
    new = ["--space", "alignment", "--smoke", "--name", "new"]
    cases = {  # arguments -> what stderr says
        ("--space", "nope", "--smoke"): "unknown search space 'nope': choose one of alignment, kl, prompt",
        ("--space", "alignment", "--smoke", "--name", "never-ran", "--resume"): "nothing to resume: there is no study "
        "'never-ran'",
        (*new, "--set", "alignment_weight=7"): "'alignment_weight' = 7.0 is invalid: allowed a number in [0, 1]",
        (*new, "--set", "num_layers"): "is not KEY=VALUE",
        (*new, "--set", "learning_rat=0.1"): "unknown config field 'learning_rat'",
        ("--space", "alignment", "--smoke", "--num-samples", "-1"): "--num-samples -1 is too small",
        (*new, "--cpus-per-trial", "0"): "--cpus-per-trial 0.0 must be > 0",
        (*new, "--confirm-seeds", "1"): "--confirm-seeds 1 must be >= 2",
        (*new, "--storage-path", str(tmp_path / "a-file" / "ray")): "is a file, not a folder",
        (*new, "--mlflow-tracking-uri", f"http://127.0.0.1:{free_port()}"): "cannot reach the MLflow tracking server",
        (*new, "--optuna-storage", "sqlite:////no/such/folder/optuna.db"): "cannot connect to the Optuna storage",
        (*new, "--address", "ray://head:10001"): "cannot write a local SQLite file",
        ("--space", "alignment", "--smoke", "--name", "taken"): "study 'taken' already exists",
        ("--space", "alignment", "--name", "broken", "--resume"): "study.json is damaged",
        (*new, "--set", "target_languages=de,xx"): "the dev split of 'xx' is not in",
        (*new, *bad_labels): "dev-de.tsv, line 3: unknown label 'probably'",
        (*new, "--set", "shots_per_class=500"): "but shots_per_class=500: lower shots_per_class to at most",
        (*new, "--set", "backbone=no-such-backbone"): "unknown backbone 'no-such-backbone': it cannot be loaded",
        (*new, "--set", "num_layers=99"): "num_layers=99 but backbone 'e5-small' has only 12 layers",
    }
    argvs = [["--help"], *map(list, cases)]
    result = run_without_torch(RUN, argvs, tmp_path)
    assert result["attempted"] == []
    help_run, *refusals = result["outcomes"]
    assert help_run["code"] == 0 and "usage: " in help_run["out"] and "--confirm-seeds" in help_run["out"]
    for (argv, message), outcome in zip(cases.items(), refusals):
        assert outcome["code"] == 2 and outcome["err"].startswith("error: "), (argv, outcome)
        assert message in outcome["err"], (argv, outcome["err"])
    assert snapshot(tmp_path) == before
