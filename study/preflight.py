"""The checks a study passes before anything is written: the storage and the MLflow store are usable, the
study's name is new (or, to resume, its stored settings and checkpoints are intact), the backbone loads,
and the Ray cluster and the stores fit each other.

Each check raises StudyError (or BackboneError) with a message naming the problem and the fix. Ray and MLflow
are imported inside the checks that need them, so that bad flags are refused in a second; no check needs torch
or transformers (the backbone's config and the checkpoint files are read through `mpt.api`, which imports
neither).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mpt.config import MPTConfig
from study.errors import StudyError
from study.paths import StudyPaths
from study.settings import StudySettings
from study.uris import is_uri, local_storage_folder, redact, sqlite_database
from trainable.spec import STATE_FILE

MLFLOW_CONNECT_TIMEOUT_S = 10


# --- can the study write where it is told to? --------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(path: Path, what: str, fix: str) -> None:
    """`path` is a writable folder, or one that can be created (without creating it: nothing is written
    before the input is known to be good)."""
    existing = nearest_existing(path)
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable by this user"
    if problem:
        raise StudyError(f"{what} {path} is not writable ({problem}): {fix}")


def check_storage(storage_path: str) -> None:
    """Local Ray Tune storage must be writable; remote storage (s3://, gs://, ...) is checked by Ray."""
    path = local_storage_folder(storage_path)
    if path is None:
        return
    check_writable_folder(
        path,
        "--storage-path",
        f"choose a folder you can write (the default is "
        f"{StudySettings.storage_path}), or on a cluster a shared file "
        f"system (file:///mnt/shared/path) or s3://bucket/path",
    )


def check_optuna_storage(setting: str) -> None:
    """An `--optuna-storage` database must accept a connection, and a journal file must be in a writable
    folder, before anything is written (the study's own journal, the default, lives in its results folder)."""
    if not setting:
        return
    if "://" not in setting:
        check_writable_folder(
            Path(setting).expanduser().resolve().parent,
            "the folder of --optuna-storage",
            "give a journal file in a folder you can write, or a database URL",
        )
        return
    import sqlalchemy  # Optuna's own dependency; connecting creates no tables

    try:
        with sqlalchemy.create_engine(setting).connect():
            pass
    except ImportError as err:  # SQLAlchemy imports a URL's driver when it builds the engine
        raise StudyError(f"--optuna-storage {redact(setting)}: {missing_driver(err)}") from None
    except Exception as err:  # a bad URL, a wrong password or database, an unreachable server
        raise StudyError(
            f"cannot connect to the Optuna storage --optuna-storage {redact(setting)} "
            f"({type(err).__name__}: {_first_line(err)}): give a reachable database URL (e.g. "
            f"postgresql+psycopg://user:password@host/db), a journal file path, or leave it "
            f"out for the study's own journal file"
        ) from None


POSTGRES_EXTRA = "pip install 'mpt-study[postgres]'"  # psycopg 3: URLs postgresql+psycopg://


def missing_driver(err: ImportError) -> str:
    """What to install for a database URL whose driver is missing."""
    name = err.name or _first_line(err)
    if name.startswith("psycopg"):
        return (
            f"its PostgreSQL driver {name} is not installed: install the postgres extra ({POSTGRES_EXTRA}, or "
            f"pip install 'psycopg[binary]') and write the URL as postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    return f"its database driver {name} is not installed: install it, or use another URL"


def check_tracking_uri(tracking_uri: str) -> None:
    """The MLflow store must be reachable now, not after hours of trials: a SQLite file in a writable
    folder, or a server that accepts connections (MLflow's client would retry for minutes)."""
    database = sqlite_database(tracking_uri)
    if database is not None:
        if database.exists() and not database.is_file():
            raise StudyError(
                f"--mlflow-tracking-uri {tracking_uri}: {database} is not a file: point it at a "
                f"SQLite file, e.g. sqlite:///results/mlflow.db"
            )
        check_writable_folder(
            database.parent,
            "the folder of the MLflow database",
            "point --mlflow-tracking-uri at sqlite:///PATH in a folder you can write, or at an "
            "MLflow server (http://HOST:5000)",
        )
        return
    parsed = urllib.parse.urlsplit(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return  # databricks, ...: MLflow's own client says what is wrong
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=MLFLOW_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise StudyError(
            f"cannot reach the MLflow tracking server at --mlflow-tracking-uri "
            f"{redact(tracking_uri)} ({type(err).__name__}: {err}): start it (`mlflow server --host "
            f"127.0.0.1 --port {port}`) or fix the URI, or leave --mlflow-tracking-uri out to use the "
            f"local SQLite store results/mlflow.db"
        ) from None


# --- does the study exist? ------------------------------------------------------------------------------


def ray_experiment_exists(path: str) -> bool:
    from ray import tune

    try:
        return tune.Tuner.can_restore(path)
    except Exception as err:  # unreachable or unauthorised storage: say so rather than guess
        raise StudyError(
            f"cannot read Ray Tune storage {path} ({type(err).__name__}: {err}): check "
            f"--storage-path and its credentials"
        ) from None


def mlflow_experiment_exists(tracking_uri: str, name: str) -> bool:
    database = sqlite_database(tracking_uri)
    if database is not None and not database.exists():
        return False  # no database yet; do not create one just to look
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri).get_experiment_by_name(name) is not None
    except MlflowException as err:
        raise StudyError(
            f"the MLflow store at --mlflow-tracking-uri {redact(tracking_uri)} failed to answer "
            f"({err}): check the URI and its credentials (MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        ) from None


def check_new_study(settings: StudySettings, paths: StudyPaths) -> None:
    """A new study must not reuse a name: it would mix or overwrite results."""
    found = []
    if paths.study_dir.exists():
        found.append(str(paths.study_dir))
    if ray_experiment_exists(paths.experiment_path()):
        found.append(f"Ray Tune experiment {paths.experiment_path()}")
    if mlflow_experiment_exists(settings.mlflow_tracking_uri, settings.name):
        found.append(f"MLflow experiment {settings.name!r}")
    if found:
        raise StudyError(
            f"study {settings.name!r} already exists ({'; '.join(found)}): continue it with "
            f"`--resume`, or start another with a new `--name`"
        )


def stored_settings(name: str, paths: StudyPaths) -> StudySettings:
    """The stored settings of the study `name` to resume, checked to be readable."""
    if not paths.settings_file.is_file():
        raise StudyError(
            f"nothing to resume: there is no study {name!r} ({paths.settings_file} does not "
            f"exist); start it without --resume, or name an existing study with --name"
        )
    try:
        stored = StudySettings.from_json(paths.settings_file.read_text(encoding="utf-8"))  # validates its config
    except (ValueError, TypeError) as err:  # JSONDecodeError and ConfigError are ValueErrors
        raise StudyError(
            f"cannot resume study {name!r}: {paths.settings_file} is damaged ({err}); "
            f"restore it from a backup (the study's MLflow run has its settings as params), or start "
            f"a new study with a new --name"
        ) from None
    return stored


def check_resumable(stored: StudySettings, paths: StudyPaths) -> None:
    """The study to resume has Ray Tune state in its stored storage (`paths` may name another storage)."""
    stored_paths = replace(paths, storage_path=stored.storage_path)
    if not ray_experiment_exists(stored_paths.experiment_path()):
        raise StudyError(
            f"nothing to resume: study {stored.name!r} has no Ray Tune state at "
            f"{stored_paths.experiment_path()} (it stopped before its first trial, or the storage "
            f"moved); start a new study with a new --name"
        )


# --- do the cluster and the stores fit each other? ---------------------------------------------------------


def check_shared_storage(storage_path: str, nodes: Sequence[dict]) -> None:
    """Trials on several nodes must checkpoint to storage every node sees."""
    alive = [node for node in nodes if node.get("Alive")]
    if len(alive) > 1 and not is_uri(storage_path):
        raise StudyError(
            f"the Ray cluster has {len(alive)} nodes but --storage-path {storage_path} is a node-local folder: "
            f"trials on other nodes would write checkpoints the driver never sees, and resume would lose them. "
            f"Use shared storage: a URI such as s3://bucket/path or gs://bucket/path, or a shared file system "
            f"mounted at the same path on every node given as file:///mnt/shared/path"
        )


def check_trial_resources(
    cpus_per_trial: float, gpus_per_trial: float, nodes: Sequence[dict], address: str | None = None
) -> str | None:
    """A trial runs on one node: one that asks for more CPUs or GPUs than any node has waits (Ray keeps it
    pending and says nothing). A local Ray (no `address`) never grows, so that is refused; a cluster's
    autoscaler may still add such a node, so there it is a warning, returned for the caller to print."""
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    for name, asked, flag in (("CPU", cpus_per_trial, "--cpus-per-trial"), ("GPU", gpus_per_trial, "--gpus-per-trial")):
        most = max((float(resources.get(name, 0)) for resources in alive), default=0.0)
        if asked > most:
            fix = (
                (
                    "start nodes with GPUs (`ray start --num-gpus N`), declare a local Ray's with MPT_STUDY_LOCAL_GPUS=N, "
                    "or train on CPU with --gpus-per-trial 0"
                )
                if name == "GPU"
                else f"lower {flag} to {most:g} or less"
            )
            problem = (
                f"{flag} {asked:g} but the largest node of the Ray cluster has {most:g} {name}s ({len(alive)} node(s))"
            )
            if address:
                return f"{problem}: its trials wait until the cluster adds such a node; if it cannot, {fix}"
            raise StudyError(f"{problem}: its trials would wait forever; {fix}")
    return None


RAY_CONNECT_TIMEOUT_S = 10


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """The GCS host and port (or Ray Client's, for ray://) that `--address` names; None where Ray finds it
    itself (`auto` without RAY_ADDRESS) or the address has no port."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")  # what ray.init(address="auto") reads first (a Ray Job sets it)
    address = address.removeprefix("ray://")
    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return None
    return host, int(port)


def check_ray_address(address: str | None) -> None:
    """A cluster named by `--address` accepts connections: `ray.init` would retry an unreachable one for
    minutes without a word (measured: still waiting after 5 minutes)."""
    endpoint = ray_endpoint(address) if address else None
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise StudyError(
            f"cannot reach the Ray cluster at --address {address} ({endpoint[0]}:{endpoint[1]}: "
            f"{type(err).__name__}: {err}): start its head node (`ray start --head --port "
            f"{endpoint[1]}`), give the address `ray start --head` printed, or leave --address out to "
            f"run on this machine"
        ) from None


NODE_CHECK_TIMEOUT_S = 180  # a node's first worker process imports torch and transformers
TRIAL_MODULES = ("torch", "transformers", "mpt.training", "trainable.mpt_trial")  # what a trial process imports


def check_nodes_run_trials(nodes: Sequence[dict], timeout_s: float = NODE_CHECK_TIMEOUT_S) -> None:
    """Every alive node of a cluster can import what a trial needs: a tiny Ray task pinned to each node imports
    it, before anything is written (a node without torch or the project would fail every trial sent there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def importable(modules: tuple[str, ...]) -> dict:
        # defined here, so that Ray ships it by value: a node without the project can still run it
        import importlib
        import sys

        missing = {}
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as err:  # ImportError, or a broken install failing at import
                missing[module] = f"{type(err).__name__}: {err}"
        return {"python": sys.executable, "missing": missing}

    probe = ray.remote(num_cpus=0, max_retries=0)(importable)  # no CPU: it runs beside a busy node's trials
    alive = [node for node in nodes if node.get("Alive")]
    calls = {
        node["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(TRIAL_MODULES)
        for node in alive
    }
    problems = []
    for node in alive:
        where = f"node {node.get('NodeManagerAddress', '?')} (id {node['NodeID'][:12]})"
        try:
            found = ray.get(calls[node["NodeID"]], timeout=timeout_s)
        except Exception as err:  # the node cannot start a Python worker, or it timed out
            problems.append(f"{where} cannot run a Python task ({type(err).__name__}: {_first_line(err)})")
            continue
        for module, error in found["missing"].items():
            problems.append(f"{where}, Python {found['python']}, cannot import {module} ({_first_line(error)})")
    if problems:
        raise StudyError(
            f"the Ray cluster has {len(problems)} problem(s) that would fail trials: "
            f"{'; '.join(problems)}. "
            f"Install the same Python environment on every node (torch, `pip install -e .` of this "
            f"project, or its requirements with the project's code shipped by `ray job submit "
            f"--working-dir .`), then start the study again; or stop the nodes that lack it "
            f"(`ray stop` on them)"
        )


def check_tracking_for_address(address: str | None, tracking_uri: str) -> None:
    if address and address.startswith("ray://") and tracking_uri.startswith("sqlite:"):
        raise StudyError(
            "with --address ray://... Ray Tune runs the study loop on the cluster's head node, which "
            "cannot write a local SQLite file: pass --mlflow-tracking-uri http://HOST:5000 (an MLflow "
            "server the cluster can reach)"
        )


# --- the backbone and the checkpoints ---------------------------------------------------------------------


def check_backbone(config: MPTConfig) -> None:
    """Fail on the driver, before anything is written, rather than in every trial: the backbone's config
    loads (the weights are the trials' job) and it has at least `num_layers` layers."""
    from mpt.api import BackboneError, backbone_layers

    try:
        layers = backbone_layers(config.backbone)
    except BackboneError as err:
        raise BackboneError(
            f"unknown backbone {config.backbone!r}: it cannot be loaded ({err}): use "
            f"'e5-small' (embedded), 'tiny-xlmr', a local Hugging Face model directory, or a hub "
            f"id such as 'xlm-roberta-base' on a machine with hub access (--set backbone=...)"
        ) from None
    if config.num_layers is not None and layers is not None and config.num_layers > layers:
        raise BackboneError(
            f"num_layers={config.num_layers} but backbone {config.backbone!r} has only {layers} "
            f"layers: use --set num_layers=N with N in [1, {layers}], or num_layers=none for all"
        )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def damaged_checkpoints(experiment_path: str) -> list[tuple[Path, str]]:
    """The trial checkpoints of a local Ray Tune experiment that cannot be restored, with the reason: each file is
    checked against the manifest written beside it (`mpt.api.verify_checkpoint_file`: its size and SHA-256)."""
    from mpt.api import CheckpointError, verify_checkpoint_file

    folder = local_storage_folder(experiment_path)
    if folder is None:
        return []  # remote storage: the trial reports a damaged checkpoint when it restores
    damaged = []
    for state_file in sorted(folder.glob(f"*/checkpoint_*/{STATE_FILE}")):
        try:
            verify_checkpoint_file(state_file)
        except CheckpointError as err:
            damaged.append((state_file, str(err)))
    return damaged


def check_checkpoints(experiment_path: str) -> None:
    """A resumed trial restores its last checkpoint: refuse to start if one of them is damaged."""
    damaged = damaged_checkpoints(experiment_path)
    if damaged:
        listing = "; ".join(reason for _, reason in damaged)  # each reason names its file
        raise StudyError(
            f"cannot resume: {len(damaged)} trial checkpoint(s) are damaged: {listing}. Nothing was "
            f"changed. Put back intact copies (from a backup), or delete each damaged "
            f"{STATE_FILE} and run --resume again: an unfinished trial then trains again from its "
            f"first epoch"
        )
