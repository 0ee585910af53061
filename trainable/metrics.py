"""What a trial reports to Ray Tune: one typed contract, and the only module that knows the metric names.

Every epoch a trial reports a `TrialReport`: `epoch` and `planned_epochs`; the losses `loss`, `ce_loss`,
`kl_loss`; `dev_acc_<lang>` and `dev_rows_<lang>` for the dev languages evaluated this epoch (English at every
evaluation epoch, the targets at the epochs English dev selects) and `dev_acc_avg` when every dev language was;
the selected epoch `best_epoch` with its dev accuracies `selected_dev_acc_<lang>` and the study's `objective`;
`epoch_seconds`; and `runtime_device`, `runtime_precision`, `runtime_num_threads` (what the trial ran on, after
placement and `auto`). A run that evaluates test adds, in its last epoch's report, `test_acc_<lang>`,
`test_acc_avg`, `test_acc_avg_target` and `test_correct_<lang>` (each test row's correctness, "0110...", in file
order). `to_report()` writes those names; `from_result()` reads them back from a Tune result (which adds its own
`trial_id`, `training_iteration` and `time_total_s`), so the trainable, the trial table, the MLflow tracker, the
console and the searcher agree on them by construction. No torch or Ray here: the study's command line loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

OBJECTIVE = "objective"  # the metric the search maximises (and ASHA compares)
DEV_PREFIX = "dev_acc_"  # dev accuracy of this epoch, per language
DEV_ROWS_PREFIX = "dev_rows_"  # dev rows per language (the Wilson intervals of the report)
SELECTED_DEV_PREFIX = "selected_dev_acc_"  # dev accuracy at the selected epoch, per language
TEST_PREFIX = "test_acc_"  # test accuracy with the selected state, per language
CORRECT_PREFIX = "test_correct_"  # each test row's correctness, per language
RUNTIME_PREFIX = "runtime_"  # what the trial ran on: device, precision, torch threads
AVERAGE, AVERAGE_TARGET = "avg", "avg_target"  # `test_acc_avg`, `test_acc_avg_target`, `dev_acc_avg`: not languages
# what the MLflow tracker charts per epoch (step = epoch); the rest is bookkeeping or text
TRACKED = (
    "loss",
    "ce_loss",
    "kl_loss",
    DEV_PREFIX,
    SELECTED_DEV_PREFIX,
    OBJECTIVE,
    "best_epoch",
    "epoch_seconds",
    TEST_PREFIX,
)


@dataclass(frozen=True)
class Objective:
    """A way to rank trials: its name (`--objective`), what it is, and whether it reads target-language dev."""

    name: str
    description: str
    reads_target_dev: bool


OBJECTIVES = {
    objective.name: objective
    for objective in (
        Objective("dev_avg", "average dev accuracy over all languages at the selected (best English dev) epoch", True),
        Objective(
            "dev_en",
            "English dev accuracy at the selected epoch (strict zero-shot protocol: no target-language dev)",
            False,
        ),
    )
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


@dataclass(frozen=True)
class Runtime:
    """What a trial ran on, once placed: `device` (cpu, cuda:0), `precision` (resolved: fp32 or bf16), threads, and
    the Ray node (a trial moved off a lost node reports its new one; None outside Ray)."""

    device: str
    precision: str
    num_threads: int
    node_id: str | None = None


@dataclass
class TestResult:
    """Test accuracy with the selected epoch's state, per language, its averages and each row's correctness."""

    __test__ = False  # a result, not a test class for pytest to collect
    accuracy: dict[str, float]
    average: float | None = None
    average_target: float | None = None
    correct: dict[str, str] = field(default_factory=dict)  # language -> "0110..." per test row, in file order


@dataclass
class TrialReport:
    """One epoch's report of a trial. A Tune result may hold less (a trial that failed before its first report):
    what it lacks is None or empty."""

    epoch: int = 0
    planned_epochs: int | None = None
    loss: float | None = None
    ce_loss: float | None = None
    kl_loss: float | None = None
    dev_accuracy: dict[str, float] = field(default_factory=dict)  # this epoch's (the languages evaluated)
    dev_rows: dict[str, int] = field(default_factory=dict)
    dev_average: float | None = None  # when every dev language was evaluated this epoch
    best_epoch: int = 0  # the epoch selected so far (0: none yet)
    selected_dev_accuracy: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    epoch_seconds: float | None = None
    runtime: Runtime | None = None
    test: TestResult | None = None  # the last epoch of a run that evaluates test
    trial_id: str | None = None  # Tune's, in a result
    time_total_s: float | None = None  # Tune's: the trial's training time so far

    @property
    def trained_all_epochs(self) -> bool:
        """Whether this is the report of the last planned epoch (not stopped early, not interrupted)."""
        return self.planned_epochs is not None and self.epoch >= self.planned_epochs

    def to_report(self) -> dict[str, Any]:
        """The metrics as `ray.tune.report` takes them (None values left out)."""
        metrics: dict[str, Any] = {
            "epoch": self.epoch,
            "planned_epochs": self.planned_epochs,
            "loss": self.loss,
            "ce_loss": self.ce_loss,
            "kl_loss": self.kl_loss,
            "best_epoch": self.best_epoch,
            "epoch_seconds": self.epoch_seconds,
            OBJECTIVE: self.objective,
            f"{DEV_PREFIX}{AVERAGE}": self.dev_average,
        }
        metrics.update(_prefixed(DEV_PREFIX, self.dev_accuracy))
        metrics.update(_prefixed(DEV_ROWS_PREFIX, self.dev_rows))
        metrics.update(_prefixed(SELECTED_DEV_PREFIX, self.selected_dev_accuracy))
        if self.runtime is not None:
            metrics.update(_prefixed(RUNTIME_PREFIX, vars(self.runtime)))
        if self.test is not None:
            metrics.update(_prefixed(TEST_PREFIX, self.test.accuracy))
            metrics.update(
                {
                    f"{TEST_PREFIX}{AVERAGE}": self.test.average,
                    f"{TEST_PREFIX}{AVERAGE_TARGET}": self.test.average_target,
                }
            )
            metrics.update(_prefixed(CORRECT_PREFIX, self.test.correct))
        return {key: value for key, value in metrics.items() if value is not None}

    @classmethod
    def from_result(cls, result: Mapping[str, Any] | None) -> "TrialReport":
        """The report in a Tune result (a trial's `last_result`, a `Result.metrics`, a callback's `result`)."""
        result = result or {}
        runtime = _per_key(result, RUNTIME_PREFIX)
        test = _per_language(result, TEST_PREFIX)
        return cls(
            # Tune counts one iteration per report, and the trainable reports once an epoch
            epoch=int(result.get("epoch") or result.get("training_iteration") or 0),
            planned_epochs=_int_or_none(result.get("planned_epochs")),
            loss=result.get("loss"),
            ce_loss=result.get("ce_loss"),
            kl_loss=result.get("kl_loss"),
            dev_accuracy=_per_language(result, DEV_PREFIX),
            dev_rows=_per_language(result, DEV_ROWS_PREFIX),
            dev_average=result.get(f"{DEV_PREFIX}{AVERAGE}"),
            best_epoch=int(result.get("best_epoch") or 0),
            selected_dev_accuracy=_per_language(result, SELECTED_DEV_PREFIX),
            objective=result.get(OBJECTIVE),
            epoch_seconds=result.get("epoch_seconds"),
            runtime=Runtime(
                str(runtime["device"]), str(runtime["precision"]), int(runtime["num_threads"]), runtime.get("node_id")
            )
            if {"device", "precision", "num_threads"} <= runtime.keys()
            else None,
            test=TestResult(
                test,
                result.get(f"{TEST_PREFIX}{AVERAGE}"),
                result.get(f"{TEST_PREFIX}{AVERAGE_TARGET}"),
                _per_language(result, CORRECT_PREFIX),
            )
            if test
            else None,
            trial_id=result.get("trial_id"),
            time_total_s=result.get("time_total_s"),
        )

    def tracked_metrics(self, ranked: bool = True) -> dict[str, float]:
        """The numbers the MLflow tracker logs for this epoch (step = `epoch`). `objective` only for a `ranked` run
        (a search trial): a run that ranks nothing (a confirmation run, whose epoch English dev selects) would chart
        a different quantity under the same name; its `selected_dev_acc_en` is what selected its epoch."""
        return {
            key: float(value)
            for key, value in self.to_report().items()
            if key.startswith(TRACKED)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (ranked or key != OBJECTIVE)
        }

    def runtime_tags(self) -> dict[str, str]:
        """What the trial ran on, as MLflow tags (`runtime_device`, ...); none before its first report."""
        return (
            {}
            if self.runtime is None
            else {
                key: str(value)
                for key, value in _prefixed(RUNTIME_PREFIX, vars(self.runtime)).items()
                if value is not None
            }
        )


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in values.items()}


def _per_key(result: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix) :]: value for key, value in result.items() if key.startswith(prefix)}


def _per_language(result: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The `<prefix><lang>` values by language, the averages left out."""
    return {key: value for key, value in _per_key(result, prefix).items() if key not in (AVERAGE, AVERAGE_TARGET)}


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
