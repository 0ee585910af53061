"""The study's answer: does MPT beat vanilla prompt transfer, on which languages, by how much, how sure.

Built from the confirmation runs (results/<study>/confirm.json): every confirmed configuration retrained with
the same S paired seeds and scored per test row. For each configuration and language: the mean test accuracy
over seeds, its seed standard deviation and a 95% interval; for MPT (the search's best) and the paper-like
default against vanilla: the paired difference per language and on the target average; the transfer gap
(English minus each language) and the share of it MPT closes; MPT's gain against each language's
typological distance from English. The intervals are `study.intervals`'s two-level paired bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from search_spaces import PAPER_DEFAULT, VANILLA
from study.language_distance import FEATURE_SET, distance_from
from study.results import COMPLETE, TrialRow
from study.intervals import Estimate, bootstrap_means, percentile_interval, rank_correlation, seed_std

TARGETS, AVERAGE = "targets", "average"


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
        name = {VANILLA: "vanilla", PAPER_DEFAULT: "paper default"}.get(self.reference or "", "MPT")
        return f"#{self.trial_number} {name}"


@dataclass
class Summary:
    """A configuration's test accuracy per language (and `average`, `targets`) over its seeds."""

    configuration: Configuration
    accuracy: dict[str, Estimate]
    std: dict[str, float]
    draws: np.ndarray  # [resamples, languages]: the bootstrap draws of each language's accuracy


@dataclass
class Comparison:
    """A configuration minus vanilla, paired by seed and test row: per language, `average` and `targets`."""

    name: str  # e.g. "MPT (trial 5)"
    configuration: Configuration
    gain: dict[str, Estimate]
    draws: np.ndarray  # [resamples, languages]: the bootstrap draws of each language's gain
    seeds: list[int]

    def conclusion(self, label: str = TARGETS) -> str:
        gain = self.gain[label]
        if gain.low > 0:
            return "better than vanilla"
        if gain.high < 0:
            return "worse than vanilla"
        return "not distinguishable from vanilla"


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
    rank_correlation: Estimate | None = None  # Spearman: headline gain vs distance
    note: str = ""  # why the headline is what it is (e.g. the best trial was vanilla itself)

    @property
    def targets(self) -> list[str]:
        return self.languages[1:]

    @property
    def line(self) -> str:
        """The study's answer in one line, e.g. `MPT (trial 5) vs vanilla on the 2 target languages: +1.3 pp
        [-0.8, +3.4], 3 paired seeds: not distinguishable from vanilla`."""
        if self.headline is None:
            return f"no verdict: {self.note}"
        gain = self.headline.gain[TARGETS]
        return (f"{self.headline.name} vs vanilla on the {len(self.targets)} target languages: "
                f"{100 * gain.mean:+.1f} pp [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}], "
                f"{len(self.headline.seeds)} paired seeds: {self.headline.conclusion()}")


def configurations(rows: Sequence[TrialRow], languages: Sequence[str]) -> list[Configuration]:
    """The confirmed configurations with every seed complete and scored per row, in trial order."""
    found = []
    for number in sorted({r.trial_number for r in rows}):
        runs = sorted((r for r in rows if r.trial_number == number and r.status == COMPLETE
                       and all(lang in r.test_correct for lang in languages)), key=lambda r: r.seed or 0)
        if runs:
            correct = {lang: np.array([[int(c) for c in r.test_correct[lang]] for r in runs]) for lang in languages}
            found.append(Configuration(number, runs[0].reference, {k: v for k, v in runs[0].params.items()
                                                                   if k != "seed"}, [r.seed for r in runs], correct))
    return found


def _with_averages(per_language: np.ndarray, points: np.ndarray, targets: slice) -> tuple[np.ndarray, np.ndarray]:
    """Draws and points of each language extended with the average over all languages and over the targets."""
    draws = np.column_stack([per_language, per_language.mean(axis=1), per_language[:, targets].mean(axis=1)])
    return draws, np.concatenate([points, [points.mean(), points[targets].mean()]])


def summarise(configuration: Configuration, languages: Sequence[str]) -> Summary:
    scores = [configuration.correct[lang] for lang in languages]
    draws, points = _with_averages(bootstrap_means(scores), np.array([s.mean() for s in scores]), slice(1, None))
    per_seed = np.array([s.mean(axis=1) for s in scores])  # [languages, seeds]
    per_seed = np.vstack([per_seed, per_seed.mean(axis=0), per_seed[1:].mean(axis=0)])
    labels = [*languages, AVERAGE, TARGETS]
    return Summary(configuration, {label: percentile_interval(draws[:, i], points[i]) for i, label in enumerate(labels)},
                   {label: seed_std(per_seed[i]) for i, label in enumerate(labels)}, draws)


def compare(name: str, configuration: Configuration, vanilla: Configuration,
            languages: Sequence[str]) -> Comparison | None:
    """`configuration` minus `vanilla` on the seeds both completed (None without one in common)."""
    seeds = [s for s in configuration.seeds if s in vanilla.seeds]
    if not seeds:
        return None
    pick = lambda c, lang: c.correct[lang][[c.seeds.index(s) for s in seeds]]  # noqa: E731
    differences = [pick(configuration, lang) - pick(vanilla, lang) for lang in languages]
    draws, points = _with_averages(bootstrap_means(differences), np.array([d.mean() for d in differences]),
                                   slice(1, None))
    labels = [*languages, AVERAGE, TARGETS]
    return Comparison(name, configuration, {label: percentile_interval(draws[:, i], points[i])
                                            for i, label in enumerate(labels)}, draws, seeds)


def build_verdict(rows: Sequence[TrialRow], languages: Sequence[str], best_trial: int | None) -> Verdict:
    """The verdict from the confirmation rows; `best_trial` is the search's best (its trial number)."""
    languages = list(languages)
    found = configurations(rows, languages)
    summaries = [summarise(c, languages) for c in found]
    vanilla = next((c for c in found if c.reference == VANILLA), None)
    verdict = Verdict(languages, summaries, None, [])
    if vanilla is None:
        verdict.note = "the vanilla baseline has no complete confirmation run to compare with"
        return verdict
    for c in found:
        if c is vanilla:
            continue
        name = "paper default" if c.reference == PAPER_DEFAULT else f"MPT (trial {c.trial_number})"
        if c.trial_number == best_trial and c.reference:
            name = f"{name} (the best trial)"
        comparison = compare(name, c, vanilla, languages)
        if comparison is not None:
            verdict.comparisons.append(comparison)
    best = next((c for c in verdict.comparisons if c.configuration.trial_number == best_trial), None)
    if best_trial == vanilla.trial_number:
        verdict.note = ("the search's best trial was vanilla itself: no MPT configuration beat it on dev; the "
                        "headline is the paper-like default")
        best = next((c for c in verdict.comparisons if c.configuration.reference == PAPER_DEFAULT), None)
    verdict.headline = best or (verdict.comparisons[0] if verdict.comparisons else None)
    if verdict.headline is None:
        verdict.note = verdict.note or "no configuration besides vanilla completed its confirmation runs"
        return verdict
    _add_gaps(verdict, vanilla)
    _add_distances(verdict)
    return verdict


def _add_gaps(verdict: Verdict, vanilla: Configuration) -> None:
    """English minus each target, for vanilla and the headline configuration, from their accuracy draws."""
    by_configuration = {id(s.configuration): s for s in verdict.summaries}
    vanilla_summary = by_configuration[id(vanilla)]
    mpt_summary = by_configuration[id(verdict.headline.configuration)]
    for index, lang in enumerate(verdict.languages[1:], start=1):
        gaps = []
        for summary in (vanilla_summary, mpt_summary):
            draws = summary.draws[:, 0] - summary.draws[:, index]
            gaps.append(percentile_interval(draws, summary.accuracy[verdict.languages[0]].mean
                                            - summary.accuracy[lang].mean))
        verdict.gaps.append(Gap(lang, *gaps))


def _add_distances(verdict: Verdict) -> None:
    """Each target's distance from English, and the rank correlation of the headline gain with it."""
    verdict.distances = distance_from(verdict.languages[0], verdict.targets)
    known = [lang for lang in verdict.targets if lang in verdict.distances]
    columns = [verdict.languages.index(lang) for lang in known]
    gains = [verdict.headline.gain[lang].mean for lang in known]
    verdict.rank_correlation = rank_correlation([verdict.distances[lang] for lang in known],
                                                verdict.headline.draws[:, columns], gains)


DISTANCE_NOTE = (f"distance: cosine distance of URIEL `{FEATURE_SET}` vectors from English (lang2vec; "
                 "study/language_distance.py says why)")
