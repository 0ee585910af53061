"""A shot-count sweep (`python study/run.py --confirm-shots 4,16,64`): the confirmation at each K (English training
examples per class) with the same paired seeds, a verdict per K, and the learning curve: each confirmed
configuration's test accuracy (English and the target average) against K, with its 95% intervals.

Seed s draws nested samples (`mpt.data.few_shot`: the 4 examples per class of K=4 are among the 16 of K=16), so
the curves are paired across K as the configurations are paired within one K. The headline verdict is the base
config's K when the sweep has it (the K the search ranked trials at), else the largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: studies run on headless machines
import matplotlib.pyplot as plt  # noqa: E402

from study.results import TrialRow  # noqa: E402
from study.verdict import TARGETS, Verdict, build_verdict  # noqa: E402
from study.verdict_report import CHANCE  # noqa: E402

PLOT_FILE = "shot_sweep.png"


@dataclass
class ShotSweep:
    verdicts: dict[int, Verdict]  # K -> its verdict, K ascending
    headline_shots: int

    @property
    def headline(self) -> Verdict:
        return self.verdicts[self.headline_shots]


def shots_of(row: TrialRow, base_shots: int) -> int:
    """A confirmation run's K: its own in a sweep (the run's params carry it), else the base config's."""
    return int(row.params.get("shots_per_class", base_shots))


def build_sweep(
    rows: Sequence[TrialRow], languages: Sequence[str], best_trial: int | None, shots: Sequence[int], base_shots: int
) -> ShotSweep:
    """A verdict per K from the confirmation rows of a sweep."""
    verdicts = {}
    for k in sorted(shots):
        verdict = build_verdict([r for r in rows if shots_of(r, base_shots) == k], languages, best_trial)
        verdict.shots = k
        verdicts[k] = verdict
    return ShotSweep(verdicts, base_shots if base_shots in verdicts else max(verdicts))


def _curves(sweep: ShotSweep, label: str) -> dict[str, list[tuple[int, object]]]:
    """Configuration label -> [(K, its accuracy Estimate on `label`)] over the sweep."""
    curves: dict[str, list] = {}
    for k, verdict in sweep.verdicts.items():
        for summary in verdict.summaries:
            curves.setdefault(summary.configuration.label, []).append((k, summary.accuracy[label]))
    return curves


def plot_sweep(path: Path, sweep: ShotSweep, source: str) -> None:
    """Test accuracy against K (log axis) per configuration, English and the target average side by side, with
    95% error bars and the chance line."""
    figure, panels = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    shots = list(sweep.verdicts)
    for axes, label, title in (
        (panels[0], source, "English (the source language)"),
        (panels[1], TARGETS, "target languages' average"),
    ):
        curves = _curves(sweep, label)
        for index, (name, points) in enumerate(curves.items()):
            shift = 1 + 0.04 * (index - (len(curves) - 1) / 2)  # side by side on the log axis, not on top
            xs, estimates = [k * shift for k, _ in points], [e for _, e in points]
            errors = [[100 * (e.mean - e.low) for e in estimates], [100 * (e.high - e.mean) for e in estimates]]
            axes.errorbar(xs, [100 * e.mean for e in estimates], yerr=errors, capsize=3, marker="o", label=name)
        axes.axhline(100 * CHANCE, color="grey", linestyle="--", linewidth=1, label="chance (33.3%)")
        axes.set_xscale("log")
        axes.set_xticks(shots, [str(k) for k in shots])
        axes.minorticks_off()
        axes.set_xlabel("English training examples per class (K)")
        axes.set_title(title)
    panels[0].set_ylabel("test accuracy (%)")
    panels[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def sweep_plots(study_dir: Path, sweep: ShotSweep) -> list[tuple[str, str]]:
    source = sweep.headline.languages[0]
    plot_sweep(study_dir / PLOT_FILE, sweep, source)
    return [("Test accuracy against shots per class (95% intervals, chance dashed)", PLOT_FILE)]


def _pp(estimate, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * estimate.mean:{sign}.1f} [{100 * estimate.low:{sign}.1f}, {100 * estimate.high:{sign}.1f}]"


def markdown_sweep(sweep: ShotSweep) -> list[str]:
    """The report's section on the sweep: the verdict at each K, then each configuration's accuracy by K."""
    lines = [
        "### Shot-count sweep",
        "",
        f"The confirmation at {', '.join(map(str, sweep.verdicts))} English training examples per class, the "
        "same paired seeds at every K (nested samples: a seed's smaller sample is part of its larger ones). The "
        f"verdict above is the one at K = {sweep.headline_shots}.",
        "",
        "| shots per class | compared | vs vanilla, target average (pp) | verdict | detects gains >= (pp) |",
        "|---:|---|---:|---|---:|",
    ]
    for k, verdict in sweep.verdicts.items():
        headline = verdict.headline
        if headline is None:
            lines.append(f"| {k} | | | no verdict: {verdict.note} | |")
            continue
        detectable = "n/a" if headline.detectable is None else f"{100 * headline.detectable:.1f}"
        lines.append(
            f"| {k} | {headline.name} | {_pp(headline.gain[TARGETS], True)} | {headline.conclusion()} | {detectable} |"
        )
    source = sweep.headline.languages[0]
    lines += [
        "",
        "Test accuracy (%) by shots per class: mean over seeds [95% interval].",
        "",
        f"| configuration | shots per class | {source} | target average |",
        "|---|---:|---:|---:|",
    ]
    english, targets = _curves(sweep, source), _curves(sweep, TARGETS)
    for name in english:
        for (k, en), (_, avg) in zip(english[name], targets[name]):
            lines.append(f"| {name} | {k} | {_pp(en)} | {_pp(avg)} |")
    return [*lines, ""]


def console_sweep(sweep: ShotSweep) -> list[str]:
    """The verdict at each K other than the headline's (which the console prints last)."""
    return [f"Verdict at {verdict.line}" for k, verdict in sweep.verdicts.items() if k != sweep.headline_shots]


def sweep_metrics(sweep: ShotSweep) -> list[tuple[str, float, int]]:
    """(name, value, step = K) for the study's MLflow run, so the UI charts them against K: the headline gain on
    the target average with its interval ends (`sweep_gain_avg_target`, `_low`, `_high`), its minimum detectable
    effect (`sweep_mde_avg_target`) and each configuration's test accuracy on English and the target average
    (`sweep_<configuration>_test_acc_<en|targets>`)."""
    values = []
    for k, verdict in sweep.verdicts.items():
        if verdict.headline is not None:
            gain = verdict.headline.gain[TARGETS]
            values += [
                ("sweep_gain_avg_target", gain.mean, k),
                ("sweep_gain_avg_target_low", gain.low, k),
                ("sweep_gain_avg_target_high", gain.high, k),
            ]
            if verdict.headline.detectable is not None:
                values.append(("sweep_mde_avg_target", verdict.headline.detectable, k))
        for summary in verdict.summaries:
            name = summary.configuration.label.replace("#", "trial").replace(" ", "_")
            for label in (verdict.languages[0], TARGETS):
                values.append((f"sweep_{name}_test_acc_{label}", summary.accuracy[label].mean, k))
    return values
