"""The command line of `python study/run.py`: its flags, and what they ask for.

The only module that reads the parsed flags (an `argparse.Namespace`): it turns them into a `StudyRequest`
(the study's `StudySettings`, the trials' `Resources` and whether to resume), which is
all the rest of the study sees. Nothing here is written or started.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mpt.config import MPTConfig
from mpt.config_args import parse_assignments, read_config_file
from search_spaces import PAPER_DEFAULT, PROBE, REFERENCE_POINTS, SPACES, VANILLA, get_space
from study.environment import command
from study.errors import StudyError
from study.paths import RESULTS_ROOT
from study.settings import (
    SCHEDULERS,
    SMOKE_BASE,
    SMOKE_NUM_SAMPLES,
    STUDY_BASE_DEFAULTS,
    StudySettings,
    check_name,
    default,
)
from study.uris import absolute_storage, default_tracking_uri, is_uri
from trainable.metrics import OBJECTIVES

USAGE = """Run a hyperparameter study of MPT: Ray Tune trials, an Optuna search, MLflow records and a report.

    python study/run.py --space alignment            # the default study: 6-7 minutes on 2 CPU cores
    python study/run.py --space alignment --smoke    # the tiny end-to-end check: <= 2 minutes
    python study/run.py --space alignment --resume   # continue the interrupted study of that name
    python study/run.py --space full --name full-40 --num-samples 40 --set num_layers=12 --set epochs=8
    python study/run.py --space alignment --confirm-top 3 --confirm-seeds 5   # a wider confirmation
    python study/run.py --space alignment --confirm-shots 4,16,64   # the confirmation at 3 shot counts
    python study/run.py --space alignment --no-confirm   # the search alone: no test accuracy, no verdict
    python study/run.py --space full --address auto --storage-path s3://bucket/mpt \\
        --mlflow-tracking-uri http://mlflow.internal:5000 --gpus-per-trial 0.25

Run from the repository root: results go to ./results (results/<name>/report.md, results/ray,
results/mlflow.db), or to --results-dir. Every study first evaluates the vanilla prompt-transfer baseline (translator
depth 0, alignment weight 0), the paper-like default (depth 1, weight 0.5) and the frozen probe (prompt
length 0: a linear head on the frozen encoder; not on an MLM-verbalizer backbone), then Optuna's TPE
suggestions, ranked on dev. Then the confirmation retrains the best trial and these references with 3 paired
seeds and evaluates test: the study ends with a verdict on MPT vs vanilla, and vanilla vs the frozen probe, with
95% intervals. Ctrl+C stops a study cleanly; `--resume` continues it. Exit status: 0 done, 1 no trial
completed, 2 bad input, 130 interrupted (resumable).
"""
DEFAULT_SPACE = "alignment"


@dataclass(frozen=True)
class Resources:
    """What each trial gets and where the trials run."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # None: the cluster's CPUs / cpus_per_trial
    address: str | None = None  # a running Ray cluster to join; None: start a local Ray


@dataclass(frozen=True)
class StudyRequest:
    """Everything the command line asks for, checked (nothing written)."""

    settings: StudySettings  # those of a new study with these flags
    resources: Resources
    resume: bool
    given: frozenset[str]  # the StudySettings.DEFINING fields that flags set explicitly
    register_model: str | None = None  # register the best trial's MLflow model under this name
    results_root: Path = RESULTS_ROOT.resolve()  # where results/<name>/ lives (--results-dir)

    def refuse_changes(self, stored: StudySettings) -> None:
        """A resume continues `stored`: refuse flags that would change it."""
        changed = [
            field
            for field in StudySettings.DEFINING
            if field in self.given and getattr(self.settings, field) != getattr(stored, field)
        ]
        if changed:
            details = "; ".join(
                f"{field}: stored {_setting_text(getattr(stored, field))}, "
                f"given {_setting_text(getattr(self.settings, field))}"
                for field in changed
            )
            raise StudyError(
                f"--resume continues study {stored.name!r} with its stored settings, but the flags "
                f"change {', '.join(changed)} ({details}): drop those flags to resume, or start a new "
                f"study with a new --name"
            )


def _setting_text(value: Any) -> str:
    """A setting as an error message shows it: its repr, a dict (the base config) abbreviated."""
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


def build_parser() -> argparse.ArgumentParser:
    usage = USAGE.replace("python study/run.py", command("study"))
    parser = argparse.ArgumentParser(
        prog=command("study"),
        description=usage.split("\n\n")[0],
        epilog=usage.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_study_flags(parser.add_argument_group("the study"))
    base = parser.add_argument_group("the base config every trial starts from (mpt.config.MPTConfig fields)")
    base.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, repeatable, e.g. --set num_layers=4 --set target_languages=de,fr "
        f"(study defaults on top of MPTConfig's: {json.dumps(STUDY_BASE_DEFAULTS)})",
    )
    base.add_argument("--config", metavar="FILE", help="YAML/JSON file of fields, applied before --set (default: none)")
    confirm = parser.add_argument_group("confirmation and verdict")
    confirm.add_argument(
        "--confirm-top",
        type=int,
        metavar="K",
        help="after the search, retrain the K best configurations and the references (vanilla, the "
        "paper default, the frozen probe) "
        "with --confirm-seeds paired seeds, evaluate test and report the verdict with 95%% "
        f"intervals (default: {default('confirm_top')})",
    )
    confirm.add_argument(
        "--confirm-seeds",
        type=int,
        metavar="S",
        help=f"paired seeds per confirmed configuration (default: {default('confirm_seeds')})",
    )
    confirm.add_argument(
        "--confirm-shots",
        metavar="K,K,...",
        help="a shot-count sweep: run the confirmation at each K (English training examples per "
        "class, e.g. 4,16,64) with the same paired seeds (their samples are nested across K), "
        "with a verdict per K and accuracy plotted against K (default: the base config's "
        "shots_per_class only)",
    )
    confirm.add_argument(
        "--no-confirm",
        action="store_true",
        help="skip the confirmation: the study ends after the search, with dev accuracies and no "
        "test accuracy or verdict (default: off)",
    )
    confirm.add_argument(
        "--test-in-search",
        action="store_true",
        help="also evaluate test in every search trial (default: off; the search ranks on dev, and "
        "the test set is looked at once, by the confirmation)",
    )
    _add_cluster_flags(parser.add_argument_group("resources and cluster"))
    return parser


def _add_study_flags(study) -> None:
    study.add_argument(
        "--space",
        help=f"search space: {', '.join(SPACES)}; search_spaces/NAME.py says what each searches "
        f"(default: {DEFAULT_SPACE}, so a bare `{command('study')}` runs the default study)",
    )
    study.add_argument(
        "--name",
        help="study name: its folder results/NAME and MLflow experiment "
        "(default: the space, with '-smoke' under --smoke)",
    )
    study.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help=f"trials, the {len(REFERENCE_POINTS)} reference points included (default: "
        f"{default('num_samples')}; "
        f"{SMOKE_NUM_SAMPLES} with --smoke)",
    )
    study.add_argument(
        "--objective",
        choices=tuple(OBJECTIVES),
        help="what Optuna maximises: "
        + "; ".join(f"{name}: {objective.description}" for name, objective in OBJECTIVES.items())
        + f" (default: {default('objective')})",
    )
    study.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="none: every trial runs all epochs; asha: stop weak trials early (never the "
        f"reference points) (default: {default('scheduler')})",
    )
    study.add_argument(
        "--seed",
        type=int,
        help="seeds the TPE sampler and the base config's few-shot "
        f"sample and initialisation (default: {default('seed')})",
    )
    study.add_argument(
        "--resume",
        action="store_true",
        help="continue the study --name (finished trials are kept, running ones continue from "
        "their last checkpoint); its stored settings apply (default: off)",
    )
    study.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny settings for an end-to-end check in under 2 minutes: {SMOKE_NUM_SAMPLES} "
        f"trials, {json.dumps(SMOKE_BASE)} (default: off)",
    )


def _add_cluster_flags(cluster) -> None:
    cluster.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="trials at once; a resumed study keeps its first value (default: the cluster's CPUs / --cpus-per-trial)",
    )
    cluster.add_argument(
        "--cpus-per-trial",
        type=float,
        default=Resources.cpus_per_trial,
        metavar="N",
        help="CPUs per trial; also the trial's torch threads (default: %(default)g)",
    )
    cluster.add_argument(
        "--gpus-per-trial",
        type=float,
        default=Resources.gpus_per_trial,
        metavar="N",
        help="GPUs per trial, fractions allowed: 0.25 packs 4 trials per GPU (default: %(default)g)",
    )
    cluster.add_argument(
        "--address",
        help="join a running Ray cluster: 'auto' (from a node of it) or "
        "'ray://HOST:10001' (default: start a local Ray)",
    )
    cluster.add_argument(
        "--storage-path",
        metavar="PATH",
        help="where Ray Tune keeps trials and checkpoints: a folder, or a URI such as "
        "s3://bucket/path, which a multi-node cluster needs "
        f"(default: {default('storage_path')}; DIR/ray with --results-dir DIR)",
    )
    cluster.add_argument(
        "--mlflow-tracking-uri",
        metavar="URI",
        help="MLflow store: a server URL on a cluster (default: sqlite:///results/mlflow.db)",
    )
    cluster.add_argument(
        "--register-model",
        metavar="NAME",
        help="register the best trial's MLflow model (its trained prompt) in the Model Registry "
        "under NAME, as a new version (default: logged on the trial's run, not registered)",
    )
    cluster.add_argument(
        "--results-dir",
        metavar="DIR",
        help="where the study's folder NAME/ (settings, trials, report) and the default MLflow and "
        "Optuna stores go; a Ray Job runs in a temporary copy of its --working-dir, so give it "
        f"a folder that outlives the job (default: ./{RESULTS_ROOT})",
    )
    cluster.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="the Optuna study's storage: a database URL on a cluster "
        "(postgresql+psycopg://user:password@host/db, with the postgres extra) "
        "or a journal file (default: results/NAME/optuna.log)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed flags (argparse exits with status 2 on an unknown flag, 0 after --help)."""
    return build_parser().parse_args(argv)


def request_from_args(args: argparse.Namespace) -> StudyRequest:
    """What the flags ask for, checked: resources first, then the settings of a new study."""
    check_resources(args)
    return StudyRequest(
        settings=settings_from_args(args),
        resources=Resources(
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
            address=args.address,
        ),
        resume=args.resume,
        given=settings_given(args),
        register_model=args.register_model,
        results_root=results_root(args),
    )


def results_root(args: argparse.Namespace) -> Path:
    return Path(args.results_dir or RESULTS_ROOT).expanduser().resolve()


def confirm_plan(args: argparse.Namespace) -> tuple[int, int]:
    """(K best configurations, S paired seeds) of the confirmation; K = 0 skips it."""
    top = 0 if args.no_confirm else default("confirm_top") if args.confirm_top is None else args.confirm_top
    return top, args.confirm_seeds or default("confirm_seeds")


def settings_given(args: argparse.Namespace) -> frozenset[str]:
    """The defining settings (StudySettings.DEFINING) that the flags set rather than leave at their defaults."""
    given = {
        "space": args.space is not None,
        "objective": args.objective is not None,
        "num_samples": args.num_samples is not None,
        "scheduler": args.scheduler is not None,
        "seed": args.seed is not None,
        "smoke": args.smoke,
        "storage_path": args.storage_path is not None,
        "mlflow_tracking_uri": args.mlflow_tracking_uri is not None,
        "optuna_storage": args.optuna_storage is not None,
        "base_config": bool(args.set or args.config or args.smoke or args.seed is not None),
        "confirm_top": args.confirm_top is not None or args.no_confirm,
        "confirm_seeds": args.confirm_seeds is not None,
        "test_in_search": args.test_in_search,
        "confirm_shots": args.confirm_shots is not None,
    }
    return frozenset(field for field, flagged in given.items() if flagged)


def base_config_from_args(args: argparse.Namespace, seed: int) -> MPTConfig:
    """Study defaults < --smoke < --config FILE < --set, checked by MPTConfig."""
    values: dict[str, Any] = {**STUDY_BASE_DEFAULTS, "seed": seed}
    if args.smoke:
        values.update(SMOKE_BASE)
    if args.config:
        values.update(read_config_file(args.config))
    values.update(parse_assignments(args.set))
    config = MPTConfig.from_dict(values)
    for field in ("data", "parallel", "xnli_repo", "backbone"):  # Ray moves trials to other folders
        value = getattr(config, field)
        if not is_uri(value) and Path(value).exists():
            config = config.replace(**{field: str(Path(value).resolve())})
    return config


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The settings a new study with these flags would have (validated, nothing written)."""
    space = get_space(args.space or DEFAULT_SPACE)
    name = check_name(args.name or (f"{space.name}-smoke" if args.smoke else space.name))
    num_samples = (
        args.num_samples
        if args.num_samples is not None
        else (SMOKE_NUM_SAMPLES if args.smoke else default("num_samples"))
    )
    # the verdict needs vanilla and the paper default, the first two; the frozen probe, third, runs from 3 trials on
    required = list(REFERENCE_POINTS).index(PAPER_DEFAULT) + 1
    if num_samples < required:
        raise StudyError(
            f"--num-samples {num_samples} is too small: every study first runs the reference points "
            f"({', '.join(REFERENCE_POINTS)}), and its verdict needs {VANILLA} and {PAPER_DEFAULT}; use "
            f"at least {required} ({len(REFERENCE_POINTS)} to include the {PROBE} too)"
        )
    seed = args.seed if args.seed is not None else default("seed")
    if seed < 0:
        raise StudyError(f"--seed {seed} is negative: use an integer >= 0")
    confirm_top, confirm_seeds = confirm_plan(args)
    return StudySettings(
        name=name,
        space=space.name,
        objective=args.objective or default("objective"),
        num_samples=num_samples,
        scheduler=args.scheduler or default("scheduler"),
        seed=seed,
        smoke=args.smoke,
        storage_path=absolute_storage(args.storage_path or str(results_root(args) / "ray")),
        mlflow_tracking_uri=args.mlflow_tracking_uri or default_tracking_uri(results_root(args)),
        optuna_storage=absolute_storage(args.optuna_storage) if args.optuna_storage else "",
        base_config=base_config_from_args(args, seed),
        confirm_top=confirm_top,
        confirm_seeds=confirm_seeds,
        test_in_search=args.test_in_search,
        confirm_shots=shot_counts(args.confirm_shots),
    )


def shot_counts(text: str | None) -> list[int]:
    """`--confirm-shots 4,16,64` as sorted distinct shot counts ([] without the flag)."""
    if text is None:
        return []
    try:
        shots = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        shots = []
    if not shots or shots[0] < 1:
        raise StudyError(
            f"--confirm-shots {text!r} is not a list of shot counts: give positive integers separated "
            f"by commas, e.g. --confirm-shots 4,16,64 (English training examples per class)"
        )
    return shots


def check_resources(args: argparse.Namespace) -> None:
    if args.register_model is not None and not args.register_model.strip():
        raise StudyError("--register-model needs a name: give the Model Registry name, e.g. --register-model mpt-xnli")
    if args.cpus_per_trial <= 0:
        raise StudyError(f"--cpus-per-trial {args.cpus_per_trial} must be > 0 (e.g. 1, or 0.5 to share a core)")
    if args.gpus_per_trial < 0:
        raise StudyError(f"--gpus-per-trial {args.gpus_per_trial} must be >= 0 (0 runs on CPU)")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise StudyError(f"--max-concurrent {args.max_concurrent} must be >= 1 (or leave it out)")
    if args.confirm_top is not None and args.confirm_top < 0:
        raise StudyError(f"--confirm-top {args.confirm_top} must be >= 0 (0 skips the confirmation, as --no-confirm)")
    if args.no_confirm and (args.confirm_top or args.confirm_seeds is not None or args.confirm_shots is not None):
        raise StudyError("--no-confirm contradicts --confirm-top/--confirm-seeds/--confirm-shots: drop one of them")
    if args.confirm_seeds is not None and args.confirm_seeds < 2:
        raise StudyError(
            f"--confirm-seeds {args.confirm_seeds} must be >= 2: an interval over seeds needs at least "
            f"two (3 is the default)"
        )
