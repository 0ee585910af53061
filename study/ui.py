"""Open the MLflow UI on a study's tracking store, reachable from this machine only (127.0.0.1).

    python study/ui.py alignment                     # then open the URL it prints; Ctrl+C stops it
    python study/ui.py alignment-smoke --port 5001   # another port (5000 is taken, or another UI runs)
    python study/ui.py NAME --results-dir DIR        # a study stored under DIR instead of ./results

Run from the repository root, like study/run.py. The study's settings (results/NAME/study.json) name its
MLflow store, and its experiment there names where its artifacts are; for the default SQLite store this starts

    mlflow server --backend-store-uri sqlite:///<abs>/results/mlflow.db
        --default-artifact-root file:///<abs>/results/mlartifacts --no-serve-artifacts
        --host 127.0.0.1 --port 5000 --workers 1

(the runs' artifacts are files under results/mlartifacts/NAME/, which the server reads where they are) and prints
the address of the study's runs in the UI's "Model training" view. The study run (the parent; its trials are
nested under it, the + next to its name unfolds them) opens with the verdict, the best trial, the references and
a link to the saved view "Best vs references, per language" (also under "Views"), which lists their runs
grouped by role and phase with `test_acc_<lang>` and `selected_dev_acc_<lang>` as columns. A trial's "Model
metrics" tab charts `loss`, `ce_loss`, `kl_loss` and `dev_acc_<lang>` per epoch; the study run's "Artifacts"
tab holds `report/report.html` (plots inline), `report/report.md` and the plots. A study tracked on an MLflow
server (`--mlflow-tracking-uri http://...`) is already browsable there: this prints that server's address and
starts nothing.
Exit status: 2 for bad input (unknown study, no store yet, port in use); otherwise the server's own.
"""

from __future__ import annotations

import argparse
import os
import runpy
import socket
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: `study` must import from this very checkout (study/checkout.py)
    runpy.run_path(str(Path(__file__).with_name("checkout.py")))["require_this_checkout"](__file__)

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


def experiment_route(experiment_id: str, query: str = "") -> str:
    """The UI's route to the study's runs table (a hash route, as the UI's own links are; `query` adds to it),
    relative to the UI's address: a link in a description works on whatever host and port serve it."""
    return f"#/experiments/{experiment_id}/runs?{TRAINING_VIEW}" + (f"&{query}" if query else "")


def run_route(experiment_id: str, run_id: str) -> str:
    """The UI's route to a run's page."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def experiment_url(base_url: str, experiment_id: str, query: str = "") -> str:
    """Where the study's runs table is in the UI."""
    return f"{base_url.rstrip('/')}/{experiment_route(experiment_id, query)}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the UI."""
    return f"{base_url.rstrip('/')}/{run_route(experiment_id, run_id)}"


def ui_base_url(tracking_uri: str) -> str | None:
    """Where a study's runs are browsed: its MLflow server, or for a local SQLite store what
    `python study/ui.py NAME` serves by default; None for any other store."""
    if tracking_uri.startswith(("http://", "https://")):
        return redact(tracking_uri)
    return f"http://{HOST}:{DEFAULT_PORT}" if sqlite_database(tracking_uri) is not None else None


def existing_database(database: Path, name: str) -> Path:
    if not database.is_file():
        raise StudyError(
            f"study {name!r} has no MLflow store yet ({database} is missing: the study stopped before "
            f"its first run, or the results moved): resume it with `{command('study')} --space SPACE "
            f"--name {name} --resume`"
        )
    return database


def find_experiment(tracking_uri: str, name: str):
    """The study's MLflow experiment (its id, and where its runs' artifacts are)."""
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if experiment is None:
        raise StudyError(
            f"the MLflow store {tracking_uri} has no experiment {name!r}: the study stopped before its "
            f"first run; resume it with `{command('study')} --space SPACE --name {name} --resume`"
        )
    return experiment


def artifact_root(experiment_location: str) -> str:
    """The folder (URI) the study's experiment keeps its artifacts under, one per study: where run.py put them
    (`results/mlartifacts/<study>` beside a SQLite store), and where a new experiment created in the UI goes."""
    return experiment_location.rstrip("/").rsplit("/", 1)[0]


def missing_artifacts(experiment_location: str) -> Path | None:
    """The experiment's local artifact folder when it is missing (moved or deleted), else None."""
    if not experiment_location.startswith("file:"):
        return None
    from urllib.parse import unquote, urlparse

    folder = Path(unquote(urlparse(experiment_location).path))
    return None if folder.is_dir() else folder


def check_port_free(port: int) -> None:
    if not 1 <= port <= 65535:
        raise StudyError(f"--port {port} is not a TCP port: use a number from 1 to 65535, e.g. --port {DEFAULT_PORT}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: only a listener blocks
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise StudyError(
                f"port {port} on {HOST} is in use ({err.strerror}; another MLflow UI?): open that one, "
                f"or pass another port, e.g. --port {port + 1}"
            ) from None


def server_command(tracking_uri: str, port: int, artifacts: str) -> list[str]:
    """`mlflow server` on the study's store. Its runs' artifacts are where their artifact URIs say (files under
    `artifacts`, the study's artifact root), which the server reads directly: it proxies none (the
    `mlflow-artifacts:` scheme is an MLflow server's own), and a new experiment made in the UI goes to the same
    root, not to ./mlruns of wherever this runs."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--default-artifact-root",
        artifacts,
        "--no-serve-artifacts",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]  # one user: one worker is enough on a small machine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command("ui"),
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="the study name (its folder under --results-dir and its MLflow experiment)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--results-dir", default=str(RESULTS_ROOT), help=f"where studies are stored (default: {RESULTS_ROOT})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_study_settings(StudyPaths(args.name, Path(args.results_dir).resolve(), ""))
        tracking_uri = settings.mlflow_tracking_uri
        if tracking_uri.startswith(("http://", "https://")):
            print(
                f"study {settings.name} is tracked on the MLflow server {tracking_uri}: open {tracking_uri} "
                f'("Model training" view) and its experiment {settings.name!r}; nothing to start here'
            )
            return 0
        database = sqlite_database(tracking_uri)
        if database is not None:
            existing_database(database, settings.name)
        experiment = find_experiment(tracking_uri, settings.name)
        check_port_free(args.port)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    missing = missing_artifacts(experiment.artifact_location)
    if missing is not None:  # the runs are still worth browsing: say why their artifacts will not show
        print(
            f"warning: the study's artifacts folder {missing} is missing (moved or deleted, or nothing was logged "
            f"yet): its runs show without artifacts (report, trial configs, models); put the folder back there "
            f"to see them",
            file=sys.stderr,
        )
    command = server_command(tracking_uri, args.port, artifact_root(experiment.artifact_location))
    print(
        f"MLflow UI for study {settings.name}: "
        f"{experiment_url(f'http://{HOST}:{args.port}', experiment.experiment_id)}\n"
        f"  (starting: {' '.join(command[2:])}; Ctrl+C stops it)",
        flush=True,
    )
    # Job execution serves GenAI features (judges, trace jobs) and starts seven worker processes: not for
    # browsing a study. An explicit setting in the environment still wins.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    os.execve(sys.executable, command, env)  # the server replaces this process: Ctrl+C and kill reach it


if __name__ == "__main__":
    sys.exit(main())
