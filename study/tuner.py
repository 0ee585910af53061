"""Running a study's trials: Ray, the data every trial shares, the trainable, and the Ray Tune experiments of
the search and of the confirmation.

Ray is imported inside the functions that need it: importing this module costs nothing.
"""

from __future__ import annotations

import os

from search_spaces import PROBE, REFERENCE_POINTS, get_space
from study.cli import Resources
from study.environment import checkout_root
from study.errors import StudyError
from study.paths import StudyPaths
from study.results import COMPLETE, TrialRow, reference_row, rows_from_results, save_rows, top_rows
from study.settings import StudySettings
from trainable.spec import trial_config

# Ray Tune retries every failure of a trial, deterministic ones too: one retry survives a crash (a killed
# process, a lost node) and costs a NaN trial one short rerun from its last checkpoint. A trial that fails
# twice is FAILED; `--resume` gives failed trials another try from their last checkpoints.
TRIAL_MAX_FAILURES = 1
CONFIRM_SUFFIX = "-confirm"
LOCAL_GPUS_ENV = "MPT_STUDY_LOCAL_GPUS"  # GPUs of the local Ray (tests, single-node machines)


def start_ray(address: str | None) -> None:
    import ray

    # Ray's INFO lines (a "Checkpoint successfully created" per trial and epoch, start-up notes) drown the
    # study's console (study.console); warnings and errors, a failed trial's full traceback among them, stay.
    log_config = ray.LoggingConfig(log_level="WARNING")
    gpus = local_gpus()
    if address:
        if gpus is not None:
            raise StudyError(
                f"{LOCAL_GPUS_ENV}={gpus} declares GPUs for a local Ray, but --address {address} joins "
                f"a cluster, whose nodes declare their own (`ray start --num-gpus N`): unset "
                f"{LOCAL_GPUS_ENV}, or leave --address out"
            )
        try:
            ray.init(address=address, logging_config=log_config)
        except ConnectionError as err:
            raise StudyError(
                f"cannot join the Ray cluster at --address {address} ({err}): start one with "
                f"`ray start --head` (then --address auto on its nodes), or leave --address out "
                f"to run on this machine"
            ) from None
    else:
        # Trial processes import `trainable` and `mpt`: from a checkout, the very checkout this driver runs (not
        # another install); an installed package's trial processes find it where the driver did
        root = checkout_root()
        if root is not None:
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        # address "local": a Ray of its own, even where RAY_ADDRESS is set or `ray start` ran on this machine
        # (ray.init() would join that cluster, and refuses num_cpus there)
        ray.init(
            address="local",
            num_cpus=available_cpus(),
            num_gpus=gpus,
            include_dashboard=False,
            logging_config=log_config,
        )  # temp files: /tmp/ray


def local_gpus() -> int | None:
    """The GPUs the local Ray declares, from $MPT_STUDY_LOCAL_GPUS (None: Ray detects them). Declared GPUs
    need not exist: a CPU machine can test how trials are placed on GPUs (they then train on CPU)."""
    text = os.environ.get(LOCAL_GPUS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise StudyError(
            f"{LOCAL_GPUS_ENV}={text!r} is not a number of GPUs: set it to an integer >= 0 (the GPUs "
            f"the local Ray offers trials), or unset it to let Ray detect them"
        )
    return int(text)


def available_cpus() -> int:
    """The CPUs this process may use (a container or `taskset` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_study_data(settings: StudySettings):
    """Load the data once on the driver; Ray shares it with every trial through its object store."""
    from mpt.api import few_shot, load_run_data
    from mpt.data import DataError

    config = settings.trial_base_config()
    # the parallel corpus whatever the base config's weight: the paper-like reference point aligns
    data = load_run_data(config, parallel=True)
    few_shot(data.train_pool, config.shots_per_class, config.seed)  # fail now, not in every trial
    if settings.confirm_shots:
        try:
            few_shot(data.train_pool, max(settings.confirm_shots), config.seed)
        except DataError as err:
            raise StudyError(
                f"--confirm-shots {max(settings.confirm_shots)} is more than the training data has: {err}"
            ) from None
    return data


def make_trainable(settings: StudySettings, resources: Resources, data, phase: str):
    """The trial function of a phase with its resources. Search trials ("search") read the dev languages the
    objective ranks by, and test only with --test-in-search; confirmation runs ("confirm") are compared on
    test, and rank nothing, so English dev alone picks their epoch."""
    from ray import tune

    from trainable.mpt_trial import train_mpt

    search = phase == "search"
    base = settings.trial_base_config(num_threads=trial_threads(resources), ranked=search)
    return tune.with_resources(
        tune.with_parameters(
            train_mpt,
            base_config=base,
            objective=settings.objective,
            data=data,
            evaluate_test=settings.test_in_search or not search,
        ),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )


def trial_threads(resources: Resources) -> int:
    """A trial's torch threads: its CPUs (at least one)."""
    return max(1, int(resources.cpus_per_trial))


def max_concurrent(resources: Resources) -> int:
    if resources.max_concurrent:
        return resources.max_concurrent
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int(cpus // resources.cpus_per_trial))


def run_tuner(
    settings: StudySettings,
    paths: StudyPaths,
    resources: Resources,
    trainable,
    tracker,
    resume: bool,
    suffix: str = "",
    search_alg=None,
    num_samples: int | None = None,
    scheduler=None,
):
    """Fit (or restore and continue) one Tune experiment; returns (ResultGrid, finished?)."""
    from ray import tune

    from study.console import StudyConsole, TrialNamer
    from study.search import trial_dirname

    path = paths.experiment_path(suffix)
    planned = num_samples if num_samples is not None else settings.num_samples
    if resume and tune.Tuner.can_restore(path):
        # finished trials stay finished; interrupted and errored ones continue from their last checkpoint;
        # the Optuna searcher comes back with its history
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent(resources),
                # one process runs trial after trial: torch and the backbone load once
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
                # Ray's messages (a failed trial's traceback) name trials as MLflow does
                trial_name_creator=TrialNamer(tracker.space, tracker.phase),
            ),
            run_config=tune.RunConfig(
                name=settings.name + suffix,
                storage_path=settings.storage_path,
                callbacks=[tracker],
                # a trial whose process dies (killed, out of memory, its node lost) continues from its
                # last checkpoint; one that keeps failing (NaN loss, bad values) is recorded as FAILED
                # and the study goes on
                failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1,
                # the legacy engine's reporter (study/run.py sets RAY_AIR_NEW_OUTPUT=0; the new one ignores it)
                progress_reporter=StudyConsole(
                    settings.name + suffix,
                    tracker.space,
                    tracker.phase,
                    planned,
                    settings.base_config.epochs,
                    settings.base_config.source_language,
                ),
            ),
        )
    grid = tuner.fit()
    finished = len(grid) >= planned and grid.num_terminated + grid.num_errors >= len(grid)
    return grid, finished


def run_search(settings: StudySettings, paths: StudyPaths, resources: Resources, trainable, tracker, resume: bool):
    """The study's search: the reference points, then Optuna's suggestions; returns (ResultGrid, finished?)."""
    from study.optuna_storage import optuna_storage_url
    from study.search import make_scheduler, make_searcher, tell_failed
    from study.tracking import TrialRunLinks
    from study.uris import redact

    space = get_space(settings.space)
    storage = optuna_storage_url(settings.optuna_storage, paths.study_dir)
    print(
        f"study {settings.name}: space {space.name} ({space.summary.rstrip('.')}), {settings.num_samples} trials, "
        f"objective {settings.objective}; Optuna study {settings.name!r} in {redact(storage)}"
        + (" (resumed)" if resume else "")
    )
    # the searcher (study/search.py) and the spaces take the base config as a dict of its fields
    skipped = skipped_references(settings)
    if skipped:
        print(
            f"study {settings.name}: no frozen-probe reference: backbone {settings.base_config.backbone!r} "
            f"answers through its MLM verbalizer (head {settings.base_config.head!r}), which prompt length 0 "
            f"leaves nothing to train; --set head=linear would run it"
        )
    searcher = make_searcher(
        space,
        settings.base_config.to_dict(),
        settings.seed,
        settings.num_samples,
        storage_url=storage,
        study_name=settings.name,
        resume=resume,
        run_info=TrialRunLinks(settings.mlflow_tracking_uri, settings.name),
        skip_references=skipped,
    )
    grid, finished = run_tuner(
        settings,
        paths,
        resources,
        trainable,
        tracker,
        resume,
        search_alg=searcher,
        num_samples=settings.num_samples,
        scheduler=make_scheduler(settings.scheduler, settings.base_config.epochs),
    )
    if finished:  # failed trials are FAIL in Optuna once the search ends with them failed, not before
        tell_failed(storage, settings.name, [int(r.config["trial_number"]) for r in grid if r.error is not None])
    return grid, finished


def skipped_references(settings: StudySettings) -> tuple[str, ...]:
    """The reference points the study cannot run: the frozen probe (prompt length 0, only a linear head trains)
    on a backbone that answers through its MLM verbalizer (MPTConfig refuses prompt length 0 there)."""
    from mpt.api import answers_through_mlm

    config = settings.base_config
    return (PROBE,) if answers_through_mlm(config.backbone, config.head) else ()


def confirmation_candidates(rows: list[TrialRow], top: int) -> list[TrialRow]:
    """The configurations the confirmation retrains: the `top` best trials, then the references (vanilla, the
    paper-like default and the frozen probe: what the verdict compares them with), each once. A reference is
    retrained whatever its search trial's status: the confirmation trains from scratch with its own seeds, and
    without vanilla there is no verdict (a search trial can fail for reasons of its own, e.g. its node lost twice)."""
    candidates = top_rows(rows, top)
    for name in REFERENCE_POINTS:
        row = reference_row(rows, name)
        if row is not None and row not in candidates:
            if row.status != COMPLETE:
                print(
                    f"note: the {name} reference's search trial #{row.trial_number} ended {row.status}; the "
                    f"confirmation retrains it all the same (the verdict needs it)"
                )
            candidates.append(row)
    return candidates


def confirmation_seeds(settings: StudySettings) -> list[int]:
    """Seeds the search did not use. Seed s gives every configuration the same few-shot sample, batch order and
    initialisation of the parts they share (prompt, head): the runs are paired by seed."""
    return [settings.seed + 1 + i for i in range(settings.confirm_seeds)]


def confirmation_shots(settings: StudySettings) -> list[int | None]:
    """The shot counts the confirmation runs at: a sweep's (`--confirm-shots`), else None (the base config's)."""
    return list(settings.confirm_shots) or [None]


def expected_cost(settings: StudySettings, row: TrialRow, shots: int | None = None) -> float:
    """A run's relative cost: tokens per sequence (prompt and text), times the alignment task's extra forward
    and backward passes on the parallel pairs when it is on."""
    config = trial_config(settings.base_config, row.params)
    if shots:
        config = config.replace(shots_per_class=shots)
    aligned = config.alignment_weight > 0
    return (
        (config.prompt_length + 60)
        * (1 + (config.alignment_batch_size / config.batch_size if aligned else 0))
        * config.shots_per_class
    )


def run_confirmation(
    settings: StudySettings,
    paths: StudyPaths,
    resources: Resources,
    rows: list[TrialRow],
    trainable,
    tracker_for,
    resume: bool,
):
    """Retrain the confirmation candidates with S paired seeds, evaluating test; returns (rows, finished?)."""
    from study.search import FixedConfigs

    candidates = confirmation_candidates(rows, settings.confirm_top)
    seeds, shots = confirmation_seeds(settings), confirmation_shots(settings)
    # the longest runs first (alignment on, longer prompts, more shots), so the phase does not end on one long run
    # while the other CPUs idle; the order changes nothing else (each run's seed fixes it)
    ordered = sorted(
        ((row, k) for row in candidates for k in shots), key=lambda pair: expected_cost(settings, *pair), reverse=True
    )
    points = [
        {
            **row.params,
            "seed": seed,
            "trial_number": row.trial_number,
            **({"reference": row.reference} if row.reference else {}),
            **({"shots_per_class": k} if k else {}),
        }
        for row, k in ordered
        for seed in seeds
    ]
    suffix = f"{CONFIRM_SUFFIX}-top{settings.confirm_top}x{settings.confirm_seeds}"
    if settings.confirm_shots:
        suffix += "-shots" + "-".join(map(str, settings.confirm_shots))
    names = ", ".join(f"#{row.trial_number}" + (f" {row.reference}" if row.reference else "") for row in candidates)
    sweep = f" x {len(shots)} shot counts {shots}" if settings.confirm_shots else ""
    print(
        f"\nconfirming {len(candidates)} configurations ({names}) x {len(seeds)} paired seeds {seeds}{sweep}: "
        f"{len(points)} runs, the only ones that evaluate test"
    )
    grid, finished = run_tuner(
        settings,
        paths,
        resources,
        trainable,
        tracker_for("confirm"),
        resume,
        suffix=suffix,
        search_alg=FixedConfigs(points),
        num_samples=len(points),
    )
    confirm_rows = rows_from_results(grid, finished)
    save_rows(paths.confirm_file, confirm_rows)
    return confirm_rows, finished
