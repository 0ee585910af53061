"""Running `python study/run.py` in the tests, and the session's shared smoke study (tests/conftest.py's
`smoke_study` fixture, read by test_study, test_mlflow_model and test_faults).

The shared study is a `--smoke` study (e5-small cut to 1 layer, 2 epochs, 4 shots per class, 12 eval examples, 2
target languages) whose objective is the tests/hooks objective `alignment_weight_times_depth`: smoke trials all
score at chance, so without it every tie goes to trial 0 and the best trial is always vanilla. With it an MPT
configuration (a TPE suggestion with w * depth > 0.5) wins the search, and the confirmation, the exported
prompts, the pyfunc model and the verdict run on a configuration that is not a reference. One trial at a time
(`--max-concurrent 1`) makes the search reproducible (TPE is asked after the same trials ended), so a study of the
same seeds ends with the same trials and the same verdict (what the resume tests compare with).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = REPO_ROOT / "study" / "run.py"
REPORT = REPO_ROOT / "study" / "report.py"
HOOKS = REPO_ROOT / "tests" / "hooks"  # on a process's PYTHONPATH: its sitecustomize installs the hooks asked for
STUDY_TIMEOUT_S = 600

WINNER_OBJECTIVE = "alignment_weight_times_depth"  # tests/hooks/objective_hook.py
SMOKE_LANGUAGES = ["en", "de", "fr"]
SMOKE_EPOCHS = 2
SHARED_NAME = "alignment-smoke"
REGISTERED = "mpt-smoke"
CONFIRM_SEEDS, SWEEP = (1, 2), (4, 8)  # the confirmation's paired seeds, and its shot counts
# the search and confirmation of the shared study; a study with these (another --name, no sweep) has its trials
SEARCH_ARGS = [
    "--space",
    "alignment",
    "--smoke",
    "--max-concurrent",
    "1",
    "--confirm-top",
    "1",
    "--confirm-seeds",
    str(len(CONFIRM_SEEDS)),
]
SHARED_ARGS = [*SEARCH_ARGS, "--confirm-shots", ",".join(map(str, SWEEP)), "--register-model", REGISTERED]


def study_env(**extra: str) -> dict[str, str]:
    """The environment of a study under test: offline, Ray's logs deduplicated, the test hooks on the PYTHONPATH
    (they do nothing unless a variable of theirs is set), and `extra`."""
    path = os.pathsep.join(filter(None, [str(HOOKS), extra.pop("PYTHONPATH", None), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "1", "PYTHONPATH": path, **extra}


def run_cli(
    script: Path, *args: str, cwd: Path, timeout: int = STUDY_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or study_env(),
    )


@dataclass(frozen=True)
class SmokeStudy:
    """A finished study: its working directory (results/ under it) and the finished process."""

    cwd: Path
    done: subprocess.CompletedProcess
    name: str = SHARED_NAME

    @property
    def study_dir(self) -> Path:
        return self.cwd / "results" / self.name

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.cwd / 'results' / 'mlflow.db'}"


def run_shared_study(cwd: Path) -> SmokeStudy:
    done = run_cli(RUN, *SHARED_ARGS, cwd=cwd, env=study_env(MPT_TEST_OBJECTIVE=WINNER_OBJECTIVE))
    assert done.returncode == 0, done.stderr[-4000:]
    return SmokeStudy(cwd, done)


def study_runs(tracking_uri: str, experiment: str) -> tuple[list, list]:
    """(the study's own runs, its trial runs) in a study's MLflow experiment, told apart by nesting (a trial's run
    carries MLflow's `mlflow.parentRunId`), whatever else they are tagged with."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return (
        [r for r in runs if "mlflow.parentRunId" not in r.data.tags],
        [r for r in runs if "mlflow.parentRunId" in r.data.tags],
    )
