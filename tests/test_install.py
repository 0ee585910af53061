"""The tool as a user installs it: a wheel of the project (`pip wheel --no-deps`), installed into a folder of its
own (`pip install --no-deps --target DIR`: torch and the rest come from this environment), its console scripts
run from another directory with only DIR on PYTHONPATH, and every module they import, in the Ray trial
processes too, from DIR rather than from this checkout.

Its study is also the console's end-to-end test: a `--smoke` study whose second trial diverges (learning rate
1e6), so the console must show a finished trial, a failed one and the failure's full traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HOOKS = REPO_ROOT / "tests" / "hooks"  # their sitecustomize logs the file of mpt.training in every trial epoch
SCRIPTS = ("mpt-study", "mpt-report", "mpt-ui", "mpt-train", "mpt-evaluate", "mpt-predict")
PACKAGES = ("mpt", "trainable", "search_spaces", "study")


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


def user_env(installed: Path, *extra_paths: Path) -> dict[str, str]:
    """The environment of a user of the installed tool: the installed folder on PYTHONPATH, not this checkout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in (installed, *extra_paths)),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAY_AIR_NEW_OUTPUT", None)  # the study's own default decides Tune's output engine
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel is installed into (its console scripts in bin/)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building in the checkout would write build/ and *.egg-info into it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline: the build uses this environment's setuptools
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        root,
        env,
    )
    wheel = next((root / "dist").glob("mpt_study-*.whl"))
    target = root / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], root, env)
    return target


@pytest.fixture(scope="module")
def installed_study(installed: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, Path]:
    """(its folder, the finished process, the trials' epoch log) of a study run with the installed `mpt-study`."""
    cwd = tmp_path_factory.mktemp("user")
    log = cwd / "epochs.jsonl"
    env = {
        **user_env(installed, HOOKS),
        "MPT_EPOCH_LOG": str(log),
        "RAY_DEDUP_LOGS": "0",
    }  # every line a trial prints, undeduplicated
    done = run(
        [
            str(installed / "bin" / "mpt-study"),
            "--space",
            "translator",
            "--smoke",
            "--name",
            "console",
            "--num-samples",
            "2",
            "--no-confirm",
            "--max-concurrent",  # one trial process: what this study checks needs no trials at once
            "1",
            "--set",
            "learning_rate=1e6",
        ],
        cwd,
        env,
        timeout=600,
    )
    return cwd, done, log


def commands_of(line: str) -> list[str]:
    """A shell line's commands joined by `&&`, without its comment."""
    return [command.strip() for command in line.split("#")[0].split("&&") if command.strip()]


def test_ci_runs_the_test_command_readme_gives() -> None:
    """README's test line (its first code block) is what `.ci/run` does: the same extras, then the same checks in
    the same order."""
    block = re.search(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S).group(1)
    install, *checks = commands_of(next(line for line in block.splitlines() if "pytest" in line))
    ci = [command for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines() for command in commands_of(line)]
    extras = re.compile(r'"\.\[[^]]*\]"')
    assert extras.findall(install) == [found for c in ci if "pip install" in c for found in extras.findall(c)]
    assert checks and all(check in ci for check in checks), (checks, ci)
    assert [ci.index(check) for check in checks] == sorted(ci.index(check) for check in checks)


@pytest.mark.slow
def test_the_installed_commands_work_from_another_directory(installed: Path, tmp_path: Path) -> None:
    env = user_env(installed)
    # everything the commands need is installed, the mini data set and the licence included
    assert (installed / "mpt" / "data" / "mini" / "train-en.tsv").is_file()
    assert list(installed.glob("mpt_study-*.dist-info/licenses/LICENSE"))
    probe = f"import importlib, json; print(json.dumps({{p: importlib.import_module(p).__file__ for p in {PACKAGES}}}))"
    for package, file in json.loads(run([sys.executable, "-c", probe], tmp_path, env).stdout).items():
        assert Path(file).is_relative_to(installed), f"{package} imported from {file}"
    for script in SCRIPTS:
        assert run([str(installed / "bin" / script), "--help"], tmp_path, env).stdout.startswith("usage: "), script
    assert run([str(installed / "bin" / "mpt-study"), "--help"], tmp_path, env).stdout.startswith("usage: mpt-study ")
    run(
        [
            str(installed / "bin" / "mpt-train"),
            "--num-layers",
            "1",
            "--epochs",
            "1",
            "--shots-per-class",
            "4",
            "--max-eval-examples",
            "6",
            "--target-languages",
            "de",
            "--quiet",
            "--output",
            "out.json",
        ],
        tmp_path,
        env,
    )
    assert json.loads((tmp_path / "out.json").read_text())["config"]["num_layers"] == 1


@pytest.mark.slow
def test_an_installed_study_trains_its_trials_with_the_installed_package(installed: Path, installed_study) -> None:
    cwd, done, log = installed_study
    sources = {json.loads(line)["mpt_training"] for line in log.read_text().splitlines()}
    assert len(sources) == 1 and Path(sources.pop()).is_relative_to(installed)  # Ray's trial processes too
    assert "MLflow: mpt-ui console" in done.stdout  # the installed tool names its own commands
    assert (cwd / "results" / "console" / "report.md").is_file()


@pytest.mark.slow
def test_study_console_shows_the_trials_progress_and_errors_and_not_ray_noise(installed_study) -> None:
    from mlflow import MlflowClient

    cwd, done, _ = installed_study
    out, err = done.stdout, done.stderr
    client = MlflowClient(f"sqlite:///{cwd / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("console")
    names = sorted(
        r.info.run_name
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("mpt_study.run_type") == "trial"
    )
    assert names == ["translator-000 vanilla", "translator-001 paper_default"]
    tables = out.split("study console (search): ")[1:]
    assert len(tables) >= 3  # pending, running, ended: the console speaks while the study runs
    for name in names:  # the console's trial names are MLflow's
        assert any(line.startswith(name + " ") for table in tables for line in table.splitlines())
    assert any(" running " in table for table in tables)
    final = tables[-1]
    assert final.startswith("2/2 trials done (1 failed) | elapsed ") and "finished" in final.splitlines()[0]
    vanilla = next(line for line in final.splitlines() if line.startswith("translator-000 vanilla "))
    fields = vanilla.split()
    assert fields[2:4] == ["done", "2/2"] and all(re.fullmatch(r"[01]\.\d{3}", f) for f in fields[4:6]), vanilla
    assert re.search(r"translator-001 paper_default +FAILED", final)
    assert re.search(r"elapsed \d+:\d\d, about \d+:\d\d left", out)  # the estimate, once an epoch was trained
    assert "translator-001 paper_default FAILED: mpt.training.NonFiniteLossError: loss is nan" in out

    # the failure in full, naming the trial as MLflow does
    assert "Trial task failed for trial translator-001 paper_default" in err
    assert "Traceback (most recent call last)" in err and "raise NonFiniteLossError(" in err
    # what the console leaves out: per-epoch checkpoint lines, Tune's hash names and its default tables
    console = out + err
    assert "Checkpoint successfully created" not in console
    assert not re.search(r"\btrain_mpt_[0-9a-f]{8}\b(?!/)", console)  # (a trial folder in a path may say it)
    assert "Trial status:" not in console and "╭" not in console and "Result for " not in console
