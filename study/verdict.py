"""The study's answer: does MPT beat vanilla prompt transfer, on which languages, by how much, how sure.

Built from the confirmation runs (results/<study>/confirm.json): every confirmed configuration retrained with
the same S paired seeds and scored per test row. For each configuration and language: the mean test accuracy
over seeds, its seed standard deviation and a 95% interval; for MPT (the search's best) and the paper-like
default against vanilla: the paired difference per language and on the target average; the transfer gap
(English minus each language) and the share of it MPT closes; MPT's gain against each language's
typological distance from English (a descriptive rank correlation); what the study could have detected (its
minimum detectable effect, and the seeds that would detect 2 pp); which per-language gains survive Holm's
correction; and vanilla (and an MPT best) against the frozen probe, the linear head on the frozen encoder with
no prompt, which a prompt method has to beat. The intervals are `study.intervals`'s variance-components
intervals over seeds and test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from search_spaces import PAPER_DEFAULT, PROBE, REFERENCE_LABELS, VANILLA
from study.intervals import (
    MAX_SEEDS,
    Estimate,
    VarianceComponents,
    holm_distinguishable,
    rank_correlation,
    seed_std,
    variance_components,
)
from study.language_distance import FEATURE_SET, distance_from
from study.results import COMPLETE, TrialRow

TARGETS, AVERAGE = "targets", "average"
EFFECT_OF_INTEREST = 0.02  # the gain the verdict says how many seeds would detect (2 pp)
ACCURACY, DIFFERENCE = (0.0, 1.0), (-1.0, 1.0)  # where a true accuracy, and a difference of two, lie


@dataclass
class Configuration:
    """One confirmed configuration: its runs' per-row test correctness, by language, seeds in order."""

    trial_number: int
    reference: str | None
    params: dict
    seeds: list[int]
    correct: dict[str, np.ndarray]  # language -> [seeds, rows] of 1/0

    @property
    def label(self) -> str:
        # a reference this version does not know (a newer study's) is named as it is, never taken for MPT
        name = REFERENCE_LABELS.get(self.reference, self.reference) if self.reference else "MPT"
        return f"#{self.trial_number} {name}"


@dataclass
class Summary:
    """A configuration's test accuracy per language (and `average`, `targets`) over its seeds."""

    configuration: Configuration
    accuracy: dict[str, Estimate]
    std: dict[str, float]


@dataclass
class Comparison:
    """A configuration minus a baseline (vanilla, or the frozen probe), paired by seed and test row: per language,
    `average` and `targets`."""

    name: str  # e.g. "MPT (trial 5)"
    configuration: Configuration
    gain: dict[str, Estimate]
    components: dict[str, VarianceComponents]  # what each gain's interval and detectable effect come from
    seeds: list[int]
    holm: dict[str, bool] = field(default_factory=dict)  # language -> distinguishable after Holm (per-language gains)
    baseline: str = "vanilla"  # what the gain is over

    def conclusion(self, label: str = TARGETS) -> str:
        gain = self.gain[label]
        if gain.low > 0:
            return f"better than {self.baseline}"
        if gain.high < 0:
            return f"worse than {self.baseline}"
        return f"not distinguishable from {self.baseline}"

    @property
    def short(self) -> str:
        """The target-average gain and its interval, e.g. `-2.1 pp [-4.0, -0.3]`."""
        gain = self.gain[TARGETS]
        return f"{100 * gain.mean:+.1f} pp [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}]"

    @property
    def detectable(self) -> float | None:
        """The target average's minimum detectable effect (80% power, two-sided 5%) with these seeds and test
        rows; None with one seed, whose variation is unknown, or where every paired run agreed on every row
        (no variation to size the study by)."""
        components = self.components[TARGETS]
        return components.detectable() if components.seeds > 1 and components.variance() > 0 else None

    def power_note(self, effect: float = EFFECT_OF_INTEREST) -> str:
        """What the study could have detected, e.g. `with 3 seeds this study detects gains >= 6.2 pp; ~14 seeds
        would detect 2 pp`."""
        components = self.components[TARGETS]
        if components.seeds < 2:
            return "one seed: the interval leaves out the seeds' variation, and what the study could detect is unknown"
        if self.detectable is None:
            return "the two agreed on every test row in every seed: no variation to say what the study could detect"
        note = f"with {components.seeds} seeds this study detects gains >= {100 * self.detectable:.1f} pp"
        if self.detectable <= effect:
            return note
        needed = components.seeds_to_detect(effect)
        if needed is not None:
            return f"{note}; ~{needed} seeds would detect {100 * effect:.0f} pp"
        floor = components.detectable_with_unlimited_seeds()
        if floor >= effect:
            return (
                f"{note}; no number of seeds would detect {100 * effect:.0f} pp on these {components.rows} test "
                f"rows: their variation alone allows >= {100 * floor:.1f} pp"
            )
        return f"{note}; more than {MAX_SEEDS} seeds would be needed for {100 * effect:.0f} pp"


@dataclass
class Gap:
    """English accuracy minus a language's: what cross-lingual transfer lost, for vanilla and for MPT."""

    language: str
    vanilla: Estimate
    mpt: Estimate

    @property
    def share_closed(self) -> float | None:
        """The part of vanilla's gap that MPT closes (None when vanilla had no gap: nothing to close)."""
        return (self.vanilla.mean - self.mpt.mean) / self.vanilla.mean if self.vanilla.low > 0 else None


@dataclass
class Verdict:
    languages: list[str]  # the source language first
    summaries: list[Summary]
    headline: Comparison | None
    comparisons: list[Comparison]
    gaps: list[Gap] = field(default_factory=list)
    distances: dict[str, float] = field(default_factory=dict)  # target language -> distance from English
    rank_correlation: float | None = None  # Spearman: headline gain vs distance (descriptive)
    note: str = ""  # why the headline is what it is (e.g. the best trial was vanilla itself)
    against_probe: list[Comparison] = field(default_factory=list)  # vanilla, then an MPT best, minus the probe
    shots: int | None = None  # shots per class, in a shot-count sweep (study.shot_sweep)

    @property
    def targets(self) -> list[str]:
        return self.languages[1:]

    @property
    def line(self) -> str:
        """The study's answer in one line, e.g. `MPT (trial 5) vs vanilla on the 2 target languages: +1.3 pp
        [-0.8, +3.4], 3 paired seeds: not distinguishable from vanilla (with 3 seeds this study detects gains >=
        6.2 pp; ~14 seeds would detect 2 pp)`, opening with `8 shots per class: ` in a shot-count sweep."""
        shots = "" if self.shots is None else f"{self.shots} shots per class: "
        if self.headline is None:
            return f"{shots}no verdict: {self.note}"
        probe = "".join(f"; {c.name} vs the frozen probe: {c.short}" for c in self.against_probe)
        return (
            f"{shots}{self.headline.name} vs vanilla on the {len(self.targets)} target languages: "
            f"{self.headline.short}, {len(self.headline.seeds)} paired seeds: {self.headline.conclusion()} "
            f"({self.headline.power_note()}){probe}"
        )


def configurations(rows: Sequence[TrialRow], languages: Sequence[str]) -> list[Configuration]:
    """The confirmed configurations with every seed complete and scored per row, in trial order."""
    found = []
    for number in sorted({r.trial_number for r in rows}):
        runs = sorted(
            (
                r
                for r in rows
                if r.trial_number == number
                and r.status == COMPLETE
                and all(lang in r.test_correct for lang in languages)
            ),
            key=lambda r: r.seed or 0,
        )
        if runs:
            correct = {lang: np.array([[int(c) for c in r.test_correct[lang]] for r in runs]) for lang in languages}
            found.append(
                Configuration(
                    number,
                    runs[0].reference,
                    {k: v for k, v in runs[0].params.items() if k != "seed"},
                    [r.seed for r in runs],
                    correct,
                )
            )
    return found


def _labelled(arrays: list[np.ndarray], languages: Sequence[str]) -> dict[str, VarianceComponents]:
    """Each language's mean of its [seeds, rows] array, the average over all languages and over the targets
    (the source language first), each with its variance components."""
    found = {lang: variance_components([array]) for lang, array in zip(languages, arrays)}
    found[AVERAGE] = variance_components(arrays)
    found[TARGETS] = variance_components(arrays[1:])
    return found


def summarise(configuration: Configuration, languages: Sequence[str]) -> Summary:
    scores = [configuration.correct[lang] for lang in languages]
    per_seed = np.array([s.mean(axis=1) for s in scores])  # [languages, seeds]
    per_seed = np.vstack([per_seed, per_seed.mean(axis=0), per_seed[1:].mean(axis=0)])
    labels = [*languages, AVERAGE, TARGETS]
    intervals = {label: c.interval(bounds=ACCURACY) for label, c in _labelled(scores, languages).items()}
    return Summary(configuration, intervals, {label: seed_std(per_seed[i]) for i, label in enumerate(labels)})


def compare(
    name: str, configuration: Configuration, vanilla: Configuration, languages: Sequence[str], baseline: str = "vanilla"
) -> Comparison | None:
    """`configuration` minus `vanilla` (or another baseline, named `baseline`) on the seeds both completed (None
    without one in common), paired by seed and test row; Holm's correction over the per-language gains."""
    seeds = [s for s in configuration.seeds if s in vanilla.seeds]
    if not seeds:
        return None
    pick = lambda c, lang: c.correct[lang][[c.seeds.index(s) for s in seeds]]  # noqa: E731
    differences = [pick(configuration, lang) - pick(vanilla, lang) for lang in languages]
    components = _labelled(differences, languages)
    holm = holm_distinguishable([components[lang].p_value() for lang in languages])
    return Comparison(
        name,
        configuration,
        {label: c.interval(bounds=DIFFERENCE) for label, c in components.items()},
        components,
        seeds,
        dict(zip(languages, holm)),
        baseline,
    )


def build_verdict(rows: Sequence[TrialRow], languages: Sequence[str], best_trial: int | None) -> Verdict:
    """The verdict from the confirmation rows; `best_trial` is the search's best (its trial number)."""
    languages = list(languages)
    found = configurations(rows, languages)
    summaries = [summarise(c, languages) for c in found]
    vanilla = next((c for c in found if c.reference == VANILLA), None)
    probe = next((c for c in found if c.reference == PROBE), None)
    verdict = Verdict(languages, summaries, None, [])
    if vanilla is None:
        verdict.note = "the vanilla baseline has no complete confirmation run to compare with"
        return verdict
    for c in found:
        if c is vanilla or c.reference == PROBE:  # the probe is no prompt method: it is compared the other way
            continue
        name = c.label.split(" ", 1)[1] if c.reference else f"MPT (trial {c.trial_number})"
        if c.trial_number == best_trial and c.reference:
            name = f"{name} (the best trial)"
        comparison = compare(name, c, vanilla, languages)
        if comparison is not None:
            verdict.comparisons.append(comparison)
    best = next((c for c in verdict.comparisons if c.configuration.trial_number == best_trial), None)
    if best_trial is not None and best_trial in (vanilla.trial_number, probe and probe.trial_number):
        beaten = "vanilla itself" if best_trial == vanilla.trial_number else "the frozen probe"
        verdict.note = (
            f"the search's best trial was {beaten}: no MPT configuration beat it on dev; the "
            "headline is the paper-like default"
        )
        best = next((c for c in verdict.comparisons if c.configuration.reference == PAPER_DEFAULT), None)
    verdict.headline = best or (verdict.comparisons[0] if verdict.comparisons else None)
    if verdict.headline is None:
        verdict.note = verdict.note or "no configuration besides vanilla completed its confirmation runs"
        return verdict
    if best is None and best_trial is not None:  # the search's best has no complete confirmation: say so
        verdict.note = (
            f"the search's best trial (#{best_trial}) has no complete confirmation run; the headline "
            f"is {verdict.headline.name}"
        )
    _add_gaps(verdict, vanilla)
    _add_distances(verdict)
    if probe is not None:
        _add_probe_comparisons(verdict, vanilla, probe, best_trial)
    return verdict


def _add_probe_comparisons(
    verdict: Verdict, vanilla: Configuration, probe: Configuration, best_trial: int | None
) -> None:
    """Vanilla minus the frozen probe and, when the search's best is an MPT configuration, the best minus the
    probe: the same paired intervals as the headline."""
    mpt_best = next(
        (
            c.configuration
            for c in verdict.comparisons
            if c.configuration.trial_number == best_trial and not c.configuration.reference
        ),
        None,
    )
    for name, configuration in (("vanilla", vanilla), (f"MPT (trial {best_trial})", mpt_best)):
        if configuration is not None:
            comparison = compare(name, configuration, probe, verdict.languages, baseline="the frozen probe")
            if comparison is not None:
                verdict.against_probe.append(comparison)


def _add_gaps(verdict: Verdict, vanilla: Configuration) -> None:
    """English minus each target, for vanilla and the headline configuration, paired by seed and test row."""
    source = verdict.languages[0]
    for lang in verdict.targets:
        gaps = [
            variance_components([c.correct[source], c.correct[lang]], (1, -1)).interval(bounds=DIFFERENCE)
            for c in (vanilla, verdict.headline.configuration)
        ]
        verdict.gaps.append(Gap(lang, *gaps))


def _add_distances(verdict: Verdict) -> None:
    """Each target's distance from English, and the rank correlation of the headline gain with it."""
    verdict.distances = distance_from(verdict.languages[0], verdict.targets)
    known = [lang for lang in verdict.targets if lang in verdict.distances]
    verdict.rank_correlation = rank_correlation(
        [verdict.distances[lang] for lang in known], [verdict.headline.gain[lang].mean for lang in known]
    )


DISTANCE_NOTE = (
    f"distance: cosine distance of URIEL `{FEATURE_SET}` vectors from English (lang2vec; "
    "study/language_distance.py says why)"
)
