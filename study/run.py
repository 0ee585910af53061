"""Run a hyperparameter study of MPT: Ray Tune trials, an Optuna search, MLflow records and a report.

    python study/run.py --space alignment            # the default study: <= 10 minutes on 2 CPU cores
    python study/run.py --space alignment --smoke    # the tiny end-to-end check: <= 2 minutes
    python study/run.py --space alignment --resume   # continue the interrupted study of that name
    python study/run.py --space full --name full-40 --num-samples 40 --set num_layers=12 --set epochs=8
    python study/run.py --space alignment --confirm-top 3 --confirm-seeds 5
    python study/run.py --space full --address auto --storage-path s3://bucket/mpt \\
        --mlflow-tracking-uri http://mlflow.internal:5000 --gpus-per-trial 0.25

Run from the repository root: results go to ./results (results/<name>/report.md, results/ray,
results/mlflow.db). Every study first evaluates the vanilla prompt-transfer baseline (translator
depth 0, alignment weight 0) and the paper-like default (depth 1, weight 0.5), then Optuna's TPE
suggestions. Ctrl+C stops a study cleanly; `--resume` continues it. Exit status: 0 done, 1 no trial
completed, 2 bad input, 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `study` (not an installed package) importable
    sys.path.insert(0, str(REPO_ROOT))

# Silence only what is harmless: Ray's notice that it will stop overriding CUDA_VISIBLE_DEVICES for
# zero-GPU trials in a future release (we ask for the future behaviour explicitly; CPU trials ignore it).
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
# CheckpointConfig(num_to_keep=1) makes Tune snapshot its state with every trial checkpoint, which we
# want (resume then matches the checkpoints); on local disk that costs milliseconds, so the
# "snapshotting may become a bottleneck" warning is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune saves its state (trials, searcher) at every step of its loop instead of every 10 s or more: a killed
# driver then never loses a trial that already trained, let alone finished. The state is a small JSON and
# the searcher's pickle, written locally (uploads to remote storage keep their own pace).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")

from mpt.config import ConfigError, MPTConfig, parse_value  # noqa: E402
from mpt.data import DataError, few_shot  # noqa: E402
from mpt.train import read_config_file  # noqa: E402
from search_spaces import REFERENCE_POINTS, SPACES, UnknownSpaceError, VANILLA, get_space  # noqa: E402
from study.results import (COMPLETE, TrialRow, best_row, reference_row, rows_from_results,  # noqa: E402
                           save_rows, top_rows)
from study.settings import (redact, redacted, DEFAULT_NUM_SAMPLES, DEFAULT_STORAGE_PATH, RESULTS_ROOT, SCHEDULERS,  # noqa: E402
                            SMOKE_BASE, SMOKE_NUM_SAMPLES, STUDY_BASE_DEFAULTS, StudyError, StudyPaths, StudySettings,
                            absolute_storage, check_name, default_tracking_uri, is_uri, local_storage_folder,
                            sqlite_database, write_atomically)
from trainable import OBJECTIVES, STATE_FILE  # noqa: E402

EXIT_NO_RESULT, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
DEFAULT_SPACE = "alignment"
# Ray Tune retries every failure of a trial, deterministic ones too: one retry survives a crash (a killed
# process, a lost node) and costs a NaN trial one short rerun from its last checkpoint. A trial that fails
# twice is FAILED; `--resume` gives failed trials another try from their last checkpoints.
TRIAL_MAX_FAILURES = 1
MLFLOW_CONNECT_TIMEOUT_S = 10
CONFIRM_SUFFIX = "-confirm"


# --- command line -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python study/run.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    study = parser.add_argument_group("the study")
    study.add_argument("--space",
                       help=f"search space: {', '.join(SPACES)}; search_spaces/NAME.py says what each searches "
                            f"(default: alignment, so a bare `python study/run.py` runs the default study)")
    study.add_argument("--name", help="study name: its folder results/NAME and MLflow experiment "
                                      "(default: the space, with '-smoke' under --smoke)")
    study.add_argument("--num-samples", type=int, metavar="N",
                       help=f"trials, the 2 reference points included (default: {DEFAULT_NUM_SAMPLES}; "
                            f"{SMOKE_NUM_SAMPLES} with --smoke)")
    study.add_argument("--objective", choices=tuple(OBJECTIVES),
                       help="what Optuna maximises: " + "; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items())
                            + " (default: dev_avg)")
    study.add_argument("--scheduler", choices=SCHEDULERS,
                       help="none: every trial runs all epochs; asha: stop weak trials early (never the "
                            "reference points) (default: none)")
    study.add_argument("--seed", type=int, help="seeds the TPE sampler and the base config's few-shot "
                                                "sample and initialisation (default: 0)")
    study.add_argument("--resume", action="store_true",
                       help="continue the study --name (finished trials are kept, running ones continue from "
                            "their last checkpoint); its stored settings apply (default: off)")
    study.add_argument("--smoke", action="store_true",
                       help=f"tiny settings for an end-to-end check in under 2 minutes: {SMOKE_NUM_SAMPLES} "
                            f"trials, {json.dumps(SMOKE_BASE)} (default: off)")
    base = parser.add_argument_group("the base config every trial starts from (mpt.config.MPTConfig fields)")
    base.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one field, repeatable, e.g. --set num_layers=4 --set target_languages=de,fr "
                           f"(study defaults on top of MPTConfig's: {json.dumps(STUDY_BASE_DEFAULTS)})")
    base.add_argument("--config", metavar="FILE", help="YAML/JSON file of fields, applied before --set "
                                                       "(default: none)")
    confirm = parser.add_argument_group("confirmation")
    confirm.add_argument("--confirm-top", type=int, default=0, metavar="K",
                         help="after the search, rerun the K best configurations (and the vanilla baseline) with "
                              "--confirm-seeds new few-shot seeds; report mean ± std per language (default: 0, off)")
    confirm.add_argument("--confirm-seeds", type=int, metavar="S",
                         help="seeds per confirmed configuration (default: 3 when --confirm-top is given)")
    cluster = parser.add_argument_group("resources and cluster")
    cluster.add_argument("--max-concurrent", type=int, metavar="N",
                         help="trials at once; a resumed study keeps its first value (default: the cluster's "
                              "CPUs / --cpus-per-trial)")
    cluster.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N",
                         help="CPUs per trial; also the trial's torch threads (default: 1)")
    cluster.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N",
                         help="GPUs per trial, fractions allowed: 0.25 packs 4 trials per GPU (default: 0)")
    cluster.add_argument("--address", help="join a running Ray cluster: 'auto' (from a node of it) or "
                                           "'ray://HOST:10001' (default: start a local Ray)")
    cluster.add_argument("--storage-path", metavar="PATH", help="where Ray Tune keeps trials and checkpoints: a folder, or a URI "
                                                "such as s3://bucket/path, which a multi-node cluster needs "
                                                f"(default: {DEFAULT_STORAGE_PATH})")
    cluster.add_argument("--mlflow-tracking-uri", metavar="URI", help="MLflow store: a server URL on a cluster "
                                                       "(default: sqlite:///results/mlflow.db)")
    return parser


def base_config_from_args(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Study defaults < --smoke < --config FILE < --set, checked by MPTConfig."""
    values: dict[str, Any] = {**STUDY_BASE_DEFAULTS, "seed": seed}
    if args.smoke:
        values.update(SMOKE_BASE)
    if args.config:
        values.update(read_config_file(args.config))
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise StudyError(f"--set {item!r} is not KEY=VALUE: write e.g. --set num_layers=4")
        values[key.strip()] = parse_value(key.strip(), text.strip())
    config = MPTConfig.from_dict(values)
    for field in ("data", "parallel", "xnli_repo", "backbone"):  # Ray moves trials to other folders
        value = getattr(config, field)
        if not is_uri(value) and Path(value).exists():
            config = config.replace(**{field: str(Path(value).resolve())})
    return config.to_dict()


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The settings a new study with these flags would have (validated, nothing written)."""
    space = get_space(args.space or DEFAULT_SPACE)
    name = check_name(args.name or (f"{space.name}-smoke" if args.smoke else space.name))
    num_samples = args.num_samples if args.num_samples is not None else (
        SMOKE_NUM_SAMPLES if args.smoke else DEFAULT_NUM_SAMPLES)
    if num_samples < len(REFERENCE_POINTS):
        raise StudyError(f"--num-samples {num_samples} is too small: every study first runs the "
                         f"{len(REFERENCE_POINTS)} reference points ({', '.join(REFERENCE_POINTS)}); use at least "
                         f"{len(REFERENCE_POINTS)}")
    seed = args.seed if args.seed is not None else 0
    if seed < 0:
        raise StudyError(f"--seed {seed} is negative: use an integer >= 0")
    results_root = RESULTS_ROOT.resolve()
    return StudySettings(
        name=name, space=space.name, objective=args.objective or "dev_avg", num_samples=num_samples,
        scheduler=args.scheduler or "none", seed=seed, smoke=args.smoke,
        storage_path=absolute_storage(args.storage_path or DEFAULT_STORAGE_PATH),
        mlflow_tracking_uri=args.mlflow_tracking_uri or default_tracking_uri(results_root),
        base_config=base_config_from_args(args, seed))


def check_resources(args: argparse.Namespace) -> None:
    if args.cpus_per_trial <= 0:
        raise StudyError(f"--cpus-per-trial {args.cpus_per_trial} must be > 0 (e.g. 1, or 0.5 to share a core)")
    if args.gpus_per_trial < 0:
        raise StudyError(f"--gpus-per-trial {args.gpus_per_trial} must be >= 0 (0 runs on CPU)")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise StudyError(f"--max-concurrent {args.max_concurrent} must be >= 1 (or leave it out)")
    if args.confirm_top < 0:
        raise StudyError(f"--confirm-top {args.confirm_top} must be >= 0")
    if args.confirm_seeds is not None and args.confirm_top == 0:
        raise StudyError("--confirm-seeds needs --confirm-top K: say how many configurations to confirm")
    if args.confirm_seeds is not None and args.confirm_seeds < 1:
        raise StudyError(f"--confirm-seeds {args.confirm_seeds} must be >= 1")


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
    check_writable_folder(path, "--storage-path", f"choose a folder you can write (the default is "
                                                  f"{DEFAULT_STORAGE_PATH}), or on a cluster a shared file system "
                                                  f"(file:///mnt/shared/path) or s3://bucket/path")


def check_tracking_uri(tracking_uri: str) -> None:
    """The MLflow store must be reachable now, not after hours of trials: a SQLite file in a writable
    folder, or a server that accepts connections (MLflow's client would retry for minutes)."""
    database = sqlite_database(tracking_uri)
    if database is not None:
        if database.exists() and not database.is_file():
            raise StudyError(f"--mlflow-tracking-uri {tracking_uri}: {database} is not a file: point it at a "
                             f"SQLite file, e.g. sqlite:///results/mlflow.db")
        check_writable_folder(database.parent, "the folder of the MLflow database",
                              "point --mlflow-tracking-uri at sqlite:///PATH in a folder you can write, or at an "
                              "MLflow server (http://HOST:5000)")
        return
    parsed = urllib.parse.urlsplit(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return  # databricks, ...: MLflow's own client says what is wrong
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=MLFLOW_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise StudyError(f"cannot reach the MLflow tracking server at --mlflow-tracking-uri "
                         f"{redact(tracking_uri)} ({type(err).__name__}: {err}): start it (`mlflow server --host "
                         f"127.0.0.1 --port {port}`) or fix the URI, or leave --mlflow-tracking-uri out to use the "
                         f"local SQLite store results/mlflow.db") from None


# --- does the study exist? ------------------------------------------------------------------------------

def ray_experiment_exists(path: str) -> bool:
    from ray import tune

    try:
        return tune.Tuner.can_restore(path)
    except Exception as err:  # unreachable or unauthorised storage: say so rather than guess
        raise StudyError(f"cannot read Ray Tune storage {path} ({type(err).__name__}: {err}): check "
                         f"--storage-path and its credentials") from None


def mlflow_experiment_exists(tracking_uri: str, name: str) -> bool:
    database = sqlite_database(tracking_uri)
    if database is not None and not database.exists():
        return False  # no database yet; do not create one just to look
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri).get_experiment_by_name(name) is not None
    except MlflowException as err:
        raise StudyError(f"the MLflow store at --mlflow-tracking-uri {redact(tracking_uri)} failed to answer "
                         f"({err}): check the URI and its credentials (MLFLOW_TRACKING_USERNAME and "
                         f"MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)") from None


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
        raise StudyError(f"study {settings.name!r} already exists ({'; '.join(found)}): continue it with "
                         f"`--resume`, or start another with a new `--name`")


def resume_settings(args: argparse.Namespace, requested: StudySettings, paths: StudyPaths) -> StudySettings:
    """The stored settings of the study to resume; flags that would change it are refused."""
    if not paths.settings_file.is_file():
        raise StudyError(f"nothing to resume: there is no study {requested.name!r} ({paths.settings_file} does not "
                         f"exist); start it without --resume, or name an existing study with --name")
    try:
        stored = StudySettings.from_json(paths.settings_file.read_text(encoding="utf-8"))
        stored.config  # noqa: B018 (validates the stored base config)
    except (ValueError, TypeError) as err:  # JSONDecodeError and ConfigError are ValueErrors
        raise StudyError(f"cannot resume study {requested.name!r}: {paths.settings_file} is damaged ({err}); "
                         f"restore it from a backup (the study's MLflow run has its settings as params), or start "
                         f"a new study with a new --name") from None
    given = {"space": args.space is not None, "objective": args.objective is not None, "num_samples": args.num_samples is not None,
             "scheduler": args.scheduler is not None, "seed": args.seed is not None, "smoke": args.smoke,
             "storage_path": args.storage_path is not None,
             "mlflow_tracking_uri": args.mlflow_tracking_uri is not None,
             "base_config": bool(args.set or args.config or args.smoke or args.seed is not None)}
    changed = [field for field in StudySettings.DEFINING
               if given[field] and getattr(requested, field) != getattr(stored, field)]
    if changed:
        details = "; ".join(f"{field}: stored {_short(getattr(stored, field))}, "
                            f"given {_short(getattr(requested, field))}" for field in changed)
        raise StudyError(f"--resume continues study {stored.name!r} with its stored settings, but the flags change "
                         f"{', '.join(changed)} ({details}): drop those flags to resume, or start a new study with "
                         f"a new --name")
    stored_paths = replace(paths, storage_path=stored.storage_path)
    if not ray_experiment_exists(stored_paths.experiment_path()):
        raise StudyError(f"nothing to resume: study {stored.name!r} has no Ray Tune state at "
                         f"{stored_paths.experiment_path()} (it stopped before its first trial, or the storage "
                         f"moved); start a new study with a new --name")
    return stored


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


def check_shared_storage(storage_path: str, nodes: Sequence[dict]) -> None:
    """Trials on several nodes must checkpoint to storage every node sees."""
    alive = [node for node in nodes if node.get("Alive")]
    if len(alive) > 1 and not is_uri(storage_path):
        raise StudyError(
            f"the Ray cluster has {len(alive)} nodes but --storage-path {storage_path} is a node-local folder: "
            f"trials on other nodes would write checkpoints the driver never sees, and resume would lose them. "
            f"Use shared storage: a URI such as s3://bucket/path or gs://bucket/path, or a shared file system "
            f"mounted at the same path on every node given as file:///mnt/shared/path")


def check_tracking_for_address(address: str | None, tracking_uri: str) -> None:
    if address and address.startswith("ray://") and tracking_uri.startswith("sqlite:"):
        raise StudyError("with --address ray://... Ray Tune runs the study loop on the cluster's head node, which "
                         "cannot write a local SQLite file: pass --mlflow-tracking-uri http://HOST:5000 (an MLflow "
                         "server the cluster can reach)")


# --- running ---------------------------------------------------------------------------------------------

def start_ray(address: str | None) -> None:
    import ray

    if address:
        try:
            ray.init(address=address)
        except ConnectionError as err:
            raise StudyError(f"cannot join the Ray cluster at --address {address} ({err}): start one with "
                             f"`ray start --head` (then --address auto on its nodes), or leave --address out "
                             f"to run on this machine") from None
    else:
        # Trial processes import `trainable`; make the checkout importable even without `pip install -e .`.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=available_cpus(), include_dashboard=False)  # temp files: Ray's default /tmp/ray


def available_cpus() -> int:
    """The CPUs this process may use (a container or `taskset` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_study_data(settings: StudySettings):
    """Load the data once on the driver; Ray shares it with every trial through its object store."""
    from mpt.training import load_run_data

    config = MPTConfig.from_dict(settings.trial_base_config())
    # parallel pairs whatever the base weight: the paper-like reference and the searches turn alignment on
    weight = config.alignment_weight or REFERENCE_POINTS["paper_default"]["alignment_weight"]
    data = load_run_data(config.replace(alignment_weight=weight))
    few_shot(data.train_pool, config.shots_per_class, config.seed)  # fail now, not in every trial
    return data


def check_backbone(config: MPTConfig) -> None:
    """Fail on the driver, before anything is written, rather than in every trial: the backbone's config
    loads (the weights are the trials' job) and it has at least `num_layers` layers."""
    from transformers import AutoConfig

    from mpt.backbones import BackboneError, backbone_path

    try:
        model_config = AutoConfig.from_pretrained(str(backbone_path(config.backbone)))
    except (OSError, ValueError) as err:
        raise BackboneError(f"unknown backbone {config.backbone!r}: it cannot be loaded ({_first_line(err)}): use "
                            f"'e5-small' (embedded), 'tiny-xlmr', a local Hugging Face model directory, or a hub "
                            f"id such as 'xlm-roberta-base' on a machine with hub access (--set backbone=...)"
                            ) from None
    layers = getattr(model_config, "num_hidden_layers", None)
    if config.num_layers is not None and layers is not None and config.num_layers > layers:
        raise BackboneError(f"num_layers={config.num_layers} but backbone {config.backbone!r} has only {layers} "
                            f"layers: use --set num_layers=N with N in [1, {layers}], or num_layers=none for all")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def damaged_checkpoints(experiment_path: str) -> list[tuple[Path, str]]:
    """The trial checkpoints of a local Ray Tune experiment that cannot be read, with the reason.

    Read as tensors and plain data only (`weights_only=True`): a checkpoint never runs code."""
    import torch

    folder = local_storage_folder(experiment_path)
    if folder is None:
        return []  # remote storage: the trial reports a damaged checkpoint when it restores
    damaged = []
    for state_file in sorted(folder.glob(f"*/checkpoint_*/{STATE_FILE}")):
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, overwritten or foreign files fail in many ways
            damaged.append((state_file, f"{type(err).__name__}: {_first_line(err)}"))
            continue
        if not isinstance(state, dict) or not {"format", "epoch", "model", "optimizer"} <= set(state):
            damaged.append((state_file, "not an mpt-study trial checkpoint"))
    return damaged


def check_checkpoints(experiment_path: str) -> None:
    """A resumed trial restores its last checkpoint: refuse to start if one of them is damaged."""
    damaged = damaged_checkpoints(experiment_path)
    if damaged:
        listing = "; ".join(f"{path} ({reason})" for path, reason in damaged)
        raise StudyError(f"cannot resume: {len(damaged)} trial checkpoint(s) are damaged: {listing}. Nothing was "
                         f"changed. Put back intact copies (from a backup), or delete each damaged "
                         f"{STATE_FILE} and run --resume again: an unfinished trial then trains again from its "
                         f"first epoch")


def make_trainable(settings: StudySettings, args: argparse.Namespace, data):
    from ray import tune

    from trainable.mpt_trial import train_mpt

    base = settings.trial_base_config(num_threads=trial_threads(args))
    return tune.with_resources(
        tune.with_parameters(train_mpt, base_config=base, objective=settings.objective, data=data),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})


def trial_threads(args: argparse.Namespace) -> int:
    """A trial's torch threads: its CPUs (at least one)."""
    return max(1, int(args.cpus_per_trial))


def max_concurrent(args: argparse.Namespace) -> int:
    if args.max_concurrent:
        return args.max_concurrent
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int(cpus // args.cpus_per_trial))


def run_tuner(settings: StudySettings, paths: StudyPaths, args: argparse.Namespace, trainable, tracker,
              resume: bool, suffix: str = "", search_alg=None, num_samples: int | None = None,
              scheduler=None):
    """Fit (or restore and continue) one Tune experiment; returns (ResultGrid, finished?)."""
    from ray import tune

    from study.search import trial_dirname

    path = paths.experiment_path(suffix)
    if resume and tune.Tuner.can_restore(path):
        # finished trials stay finished; interrupted and errored ones continue from their last checkpoint;
        # the Optuna searcher comes back with its history
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent(args),
                                        # one process runs trial after trial: torch and the backbone load once
                                        reuse_actors=True, trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=settings.name + suffix, storage_path=settings.storage_path, callbacks=[tracker],
                # a trial whose process dies (killed, out of memory, its node lost) continues from its
                # last checkpoint; one that keeps failing (NaN loss, bad values) is recorded as FAILED
                # and the study goes on
                failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1))
    grid = tuner.fit()
    planned = num_samples if num_samples is not None else settings.num_samples
    finished = len(grid) >= planned and grid.num_terminated + grid.num_errors >= len(grid)
    return grid, finished


def export_best_weights(client, run_id: str, checkpoint, study_dir: Path) -> Path | None:
    """The best trial's prompt, translator (and linear head) weights, as safetensors, into its MLflow run."""
    import torch
    from safetensors.torch import save_file

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state_file = Path(directory) / STATE_FILE
        if not state_file.exists():  # deleted as damaged: the trial's results stand, its weights are gone
            print(f"warning: the best trial's checkpoint {directory} has no {STATE_FILE}: no best weights exported",
                  file=sys.stderr)
            return None
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    tensors = {k: v.contiguous() for k, v in state["best_state"].items()
               if k.startswith(("prompt.", "translator.", "head."))}
    path = study_dir / "best_weights.safetensors"
    save_file(tensors, str(path), metadata={"epoch": str(state["best_epoch"]), "config": state["config"]})
    client.log_artifact(run_id, str(path), artifact_path="best_weights")
    return path


def run_confirmation(settings: StudySettings, paths: StudyPaths, args: argparse.Namespace, rows: list[TrialRow],
                     trainable, tracker_for, resume: bool) -> list[TrialRow]:
    """Rerun the top K configurations and the vanilla baseline with S seeds the search did not use."""
    from study.search import FixedConfigs

    seeds_per = args.confirm_seeds or 3
    candidates = top_rows(rows, args.confirm_top)
    vanilla = reference_row(rows, VANILLA)
    if vanilla is not None and vanilla.status == COMPLETE and vanilla not in candidates:
        candidates.append(vanilla)  # the comparison the gains are measured against
    seeds = [settings.seed + 1 + i for i in range(seeds_per)]
    points = [{**row.params, "seed": seed, "trial_number": row.trial_number,
               **({"reference": row.reference} if row.reference else {})}
              for row in candidates for seed in seeds]
    suffix = f"{CONFIRM_SUFFIX}-top{args.confirm_top}x{seeds_per}"
    print(f"\nconfirming {len(candidates)} configurations x {seeds_per} seeds {seeds} ({len(points)} runs)")
    grid, finished = run_tuner(settings, paths, args, trainable, tracker_for("confirm"), resume, suffix=suffix,
                               search_alg=FixedConfigs(points),
                               num_samples=len(points))
    confirm_rows = rows_from_results(grid, finished)
    save_rows(paths.confirm_file, confirm_rows)
    return confirm_rows if finished else []


def run_study(args: argparse.Namespace) -> int:
    check_resources(args)
    requested = settings_from_args(args)
    paths = StudyPaths(requested.name, RESULTS_ROOT.resolve(), requested.storage_path)
    if args.resume:
        settings = resume_settings(args, requested, paths)
        paths = replace(paths, storage_path=settings.storage_path)
        check_storage(settings.storage_path)
        check_tracking_uri(settings.mlflow_tracking_uri)
    else:
        # before check_new_study, which reads the storage and the MLflow store
        check_storage(requested.storage_path)
        check_tracking_uri(requested.mlflow_tracking_uri)
        check_new_study(requested, paths)
        settings = requested
    check_tracking_for_address(args.address, settings.mlflow_tracking_uri)
    config = settings.config

    # heavy imports only once the input is known to be good: errors above come back in a second
    from mlflow import MlflowClient

    from study.report import write_report
    from study.search import make_scheduler, make_searcher
    from study.tracking import (StudyTracker, environment_tags, find_runs, find_study_run, get_or_create_experiment,
                                start_study_run)

    data = load_study_data(settings)
    check_backbone(config)
    if args.resume:
        check_checkpoints(paths.experiment_path())

    start_ray(args.address)
    import ray

    check_shared_storage(settings.storage_path, ray.nodes())

    client = MlflowClient(settings.mlflow_tracking_uri)
    if not args.resume:
        write_atomically(paths.settings_file, settings.to_json())
    artifacts = None
    if settings.mlflow_tracking_uri.startswith("sqlite:"):  # keep artifacts with the database, not in ./mlruns
        artifacts = (paths.results_root / "mlartifacts" / settings.name).as_uri()
    experiment_id = get_or_create_experiment(client, settings.name, artifacts)
    parent_run_id = find_study_run(client, experiment_id)
    if parent_run_id is None:
        search_settings = {"space": settings.space, "objective": settings.objective,
                           "num_samples": settings.num_samples, "scheduler": settings.scheduler,
                           "seed": settings.seed, "smoke": settings.smoke, "sampler": "TPE(multivariate)",
                           "storage_path": settings.storage_path}
        # no credentials in MLflow: a URI with a token (storage, data, hub repo) is logged without it
        params = redacted({**search_settings, **{f"base.{k}": v for k, v in settings.base_config.items()}})
        tags = redacted({**environment_tags(REPO_ROOT), "backbone": config.backbone, "data": config.data,
                         "languages": ",".join(config.languages)})
        parent_run_id = start_study_run(client, experiment_id, settings.name, params, tags)
    else:
        client.update_run(parent_run_id, status="RUNNING")

    trainable = make_trainable(settings, args, data)

    def tracker_for(phase: str) -> StudyTracker:
        return StudyTracker(settings.mlflow_tracking_uri, settings.name, settings.space,
                            redacted(settings.trial_base_config()),
                            phase)

    space = get_space(settings.space)
    started = time.perf_counter()
    print(f"study {settings.name}: space {space.name} ({', '.join(space.params)}), {settings.num_samples} trials, "
          f"objective {settings.objective}" + (" (resumed)" if args.resume else ""))
    grid, finished = run_tuner(
        settings, paths, args, trainable, tracker_for("search"), args.resume,
        search_alg=make_searcher(space, settings.base_config, settings.seed, settings.num_samples),
        num_samples=settings.num_samples, scheduler=make_scheduler(settings.scheduler, config.epochs))
    rows = rows_from_results(grid, finished)
    save_rows(paths.trials_file, rows)
    retire_lost_trial_runs(client, experiment_id, rows)
    if not finished:
        return interrupted(client, experiment_id, parent_run_id, settings, rows)

    best = best_row(rows)
    if best is not None:
        best_runs = find_runs(client, experiment_id, ray__trial_id=best.trial_id)
        result = next((r for r in grid if (r.metrics or {}).get("trial_id") == best.trial_id), None)
        if best_runs and result is not None:
            export_best_weights(client, best_runs[0].info.run_id, result.checkpoint, paths.study_dir)
            client.set_tag(best_runs[0].info.run_id, "best_trial", "true")
        client.set_tag(parent_run_id, "best_trial_number", str(best.trial_number))
        log_summary_metrics(client, parent_run_id, best, reference_row(rows, VANILLA))

    if args.confirm_top and best is not None:
        confirm_rows = run_confirmation(settings, paths, args, rows, trainable, tracker_for, args.resume)
        if not confirm_rows:
            return interrupted(client, experiment_id, parent_run_id, settings, rows, phase="confirmation")

    summary = write_report(paths)
    for file in sorted(paths.study_dir.iterdir()):
        if file.suffix in (".md", ".html", ".png", ".json"):
            client.log_artifact(parent_run_id, str(file), artifact_path="report")
    print(f"\n{summary}")
    print(f"finished in {time.perf_counter() - started:.0f} s; MLflow: mlflow ui --backend-store-uri "
          f"{redact(settings.mlflow_tracking_uri)} --host 127.0.0.1")
    if best is None:
        client.set_terminated(parent_run_id, status="FAILED")
        print(f"error: no trial of study {settings.name} completed; the reasons are in {paths.report_file} and "
              f"in the trials' MLflow runs (tag 'error')", file=sys.stderr)
        return EXIT_NO_RESULT
    client.set_terminated(parent_run_id, status="FINISHED")
    return 0


def retire_lost_trial_runs(client, experiment_id: str, rows: list[TrialRow]) -> None:
    """Delete the MLflow runs of search trials the study no longer has, so each trial keeps exactly one run.

    Tune saves its state every few seconds: a driver killed between starting a trial and the next save
    leaves an MLflow run for a trial the resumed study does not know (the searcher state is from the same
    save, so the study runs that point again, under a new trial id). The run is marked KILLED and deleted
    (MLflow keeps deleted runs restorable)."""
    from study.tracking import find_runs

    known = {row.trial_id for row in rows}
    for run in find_runs(client, experiment_id, mpt_study__role="trial", mpt_study__phase="search"):
        if run.data.tags.get("ray.trial_id") not in known:
            client.set_tag(run.info.run_id, "lost", "its trial was lost with a killed driver and ran again as "
                                                    "a new trial")
            client.set_terminated(run.info.run_id, status="KILLED")
            client.delete_run(run.info.run_id)


def log_summary_metrics(client, parent_run_id: str, best: TrialRow, vanilla: TrialRow | None) -> None:
    """The parent run's headline numbers: best and vanilla test accuracy per language and the gain."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric("best_objective", best.objective, now, 0)]
    for lang, acc in best.test_accuracy.items():
        metrics.append(Metric(f"best_test_acc_{lang}", acc, now, 0))
        if vanilla is not None and lang in vanilla.test_accuracy:
            metrics.append(Metric(f"vanilla_test_acc_{lang}", vanilla.test_accuracy[lang], now, 0))
            metrics.append(Metric(f"gain_{lang}", acc - vanilla.test_accuracy[lang], now, 0))
    client.log_batch(parent_run_id, metrics=metrics, synchronous=True)


def interrupted(client, experiment_id: str, parent_run_id: str, settings: StudySettings, rows: list[TrialRow],
                phase: str = "search") -> int:
    """Leave MLflow saying what happened, and tell the user how to continue."""
    from study.tracking import find_runs

    for run in find_runs(client, experiment_id, mpt_study__role="trial"):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="KILLED")
    client.set_tag(parent_run_id, "interrupted", f"during the {phase}")
    client.set_terminated(parent_run_id, status="KILLED")
    done = sum(r.status != "UNFINISHED" for r in rows)
    print(f"\nstudy {settings.name} interrupted during the {phase} ({done} of {settings.num_samples} search trials "
          f"ended); continue it with:\n  python study/run.py --space {settings.space} --name {settings.name} "
          f"--resume", file=sys.stderr)
    return EXIT_INTERRUPTED


def input_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input (a message and exit status 2, not a traceback)."""
    errors: list[type[BaseException]] = [StudyError, UnknownSpaceError, ConfigError, DataError]
    # mpt.backbones imports transformers (seconds): if nothing imported it, nothing raised its error
    backbones = sys.modules.get("mpt.backbones")
    if backbones is not None:
        errors.append(backbones.BackboneError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Tune prints the trials; Optuna's lines repeat them
    try:
        return run_study(args)
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted before the study started its trials: nothing to resume beyond what was saved",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
