"""Open the MLflow UI on a study's tracking store, reachable from this machine only (127.0.0.1).

    python study/ui.py alignment                     # then open the URL it prints; Ctrl+C stops it
    python study/ui.py alignment-smoke --port 5001   # another port (5000 is taken, or another UI runs)
    python study/ui.py NAME --results-dir DIR        # a study stored under DIR instead of ./results

Run from the repository root, like study/run.py. The study's settings (results/NAME/study.json) name its
MLflow store; for the default SQLite store this starts

    mlflow server --backend-store-uri sqlite:///<abs>/results/mlflow.db --host 127.0.0.1 --port 5000

and prints the address of the study's runs in the UI's "Model training" view: the study is the parent
run, its trials are nested under it (expand it with the + next to its name), "Columns" adds the searched
parameters and `selected_dev_acc_<lang>` (the confirmation runs also `test_acc_<lang>`) to the table, a trial's "Model metrics" tab charts `loss`,
`ce_loss`, `kl_loss` and `dev_acc_<lang>` per epoch, and the parent run's "Artifacts" tab holds
`report/report.html` (plots inline), `report/report.md` and the plots. A study tracked on an MLflow server (`--mlflow-tracking-uri http://...`)
is already browsable there: this prints that server's address and starts nothing.
Exit status: 2 for bad input (unknown study, no store yet, port in use); otherwise the server's own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: Python must import `study` from this very checkout
    _found = importlib.util.find_spec("study")
    if _found is None or Path(_found.origin).resolve().parent != Path(__file__).resolve().parent:
        sys.exit(f"error: {__file__} runs from a checkout that is not installed ('study' imports from "
                 f"{Path(_found.origin).parent if _found else 'nowhere'}): run `pip install -e .` in "
                 f"{Path(__file__).resolve().parent.parent}, or put that folder on PYTHONPATH")

from study.environment import command  # noqa: E402
from study.errors import StudyError  # noqa: E402
from study.paths import RESULTS_ROOT, StudyPaths  # noqa: E402
from study.settings import load_study_settings  # noqa: E402
from study.uris import redact, sqlite_database  # noqa: E402

HOST = "127.0.0.1"  # loopback only: the UI has no login, and it can change and delete runs
DEFAULT_PORT = 5000
EXIT_BAD_INPUT = 2
# The UI opens in its GenAI view unless the URL asks for the "Model training" one.
TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(base_url: str, experiment_id: str) -> str:
    """Where the study's runs table is in the UI (a hash route, as the UI's own links are)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the UI."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_base_url(tracking_uri: str) -> str | None:
    """Where a study's runs are browsed: its MLflow server, or for a local SQLite store what
    `python study/ui.py NAME` serves by default; None for any other store."""
    if tracking_uri.startswith(("http://", "https://")):
        return redact(tracking_uri)
    return f"http://{HOST}:{DEFAULT_PORT}" if sqlite_database(tracking_uri) is not None else None


def existing_database(database: Path, name: str) -> Path:
    if not database.is_file():
        raise StudyError(f"study {name!r} has no MLflow store yet ({database} is missing: the study stopped before "
                         f"its first run, or the results moved): resume it with `{command('study')} --space SPACE "
                         f"--name {name} --resume`")
    return database


def find_experiment_id(tracking_uri: str, name: str) -> str:
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if experiment is None:
        raise StudyError(f"the MLflow store {tracking_uri} has no experiment {name!r}: the study stopped before its "
                         f"first run; resume it with `{command('study')} --space SPACE --name {name} --resume`")
    return experiment.experiment_id


def check_port_free(port: int) -> None:
    if not 1 <= port <= 65535:
        raise StudyError(f"--port {port} is not a TCP port: use a number from 1 to 65535, e.g. --port {DEFAULT_PORT}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: only a listener blocks
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise StudyError(f"port {port} on {HOST} is in use ({err.strerror}; another MLflow UI?): open that one, "
                             f"or pass another port, e.g. --port {port + 1}") from None


def server_command(tracking_uri: str, port: int, artifacts: Path | None) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri, "--host", HOST,
               "--port", str(port), "--workers", "1"]  # one user: one worker is enough on a small machine
    if artifacts is not None:  # where run.py keeps artifacts for a SQLite store, rather than ./mlartifacts
        command += ["--artifacts-destination", str(artifacts)]
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("ui"), description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the study name (its folder under --results-dir and its MLflow experiment)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default: {DEFAULT_PORT})")
    parser.add_argument("--results-dir", default=str(RESULTS_ROOT),
                        help=f"where studies are stored (default: {RESULTS_ROOT})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_study_settings(StudyPaths(args.name, Path(args.results_dir).resolve(), ""))
        tracking_uri = settings.mlflow_tracking_uri
        if tracking_uri.startswith(("http://", "https://")):
            print(f"study {settings.name} is tracked on the MLflow server {tracking_uri}: open {tracking_uri} "
                  f"(\"Model training\" view) and its experiment {settings.name!r}; nothing to start here")
            return 0
        artifacts = None
        database = sqlite_database(tracking_uri)
        if database is not None:
            artifacts = existing_database(database, settings.name).parent / "mlartifacts"
        experiment_id = find_experiment_id(tracking_uri, settings.name)
        check_port_free(args.port)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    command = server_command(tracking_uri, args.port, artifacts)
    print(f"MLflow UI for study {settings.name}: {experiment_url(f'http://{HOST}:{args.port}', experiment_id)}\n"
          f"  (starting: {' '.join(command[2:])}; Ctrl+C stops it)", flush=True)
    # Job execution serves GenAI features (judges, trace jobs) and starts seven worker processes: not for
    # browsing a study. An explicit setting in the environment still wins.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    os.execve(sys.executable, command, env)  # the server replaces this process: Ctrl+C and kill reach it


if __name__ == "__main__":
    sys.exit(main())
