"""The verdict's statistics against values computed independently here, and the verdict built from
confirmation rows (fixed arrays: no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from search_spaces import PAPER_DEFAULT, VANILLA
from study.language_distance import distance_from
from study.results import COMPLETE, TrialRow
from study.intervals import (Estimate, binomial_interval, bootstrap_means, percentile_interval, rank_correlation,
                              seed_std)
from study.verdict import TARGETS, build_verdict

RNG = np.random.default_rng(7)


def test_row_level_spread_matches_the_binomial_standard_error():
    rows = (RNG.random(400) < 0.4).astype(float)
    draws = bootstrap_means([rows[None, :]])[:, 0]  # one seed: only the rows vary
    p = rows.mean()
    assert draws.mean() == pytest.approx(p, abs=0.005)
    assert draws.std() == pytest.approx(math.sqrt(p * (1 - p) / rows.size), rel=0.06)


def test_seed_level_spread_matches_the_spread_of_a_resampled_mean_of_seeds():
    per_seed = np.array([0.30, 0.36, 0.42, 0.39, 0.33])
    scores = np.repeat(per_seed[:, None], 50, axis=1)  # constant within a seed: only the seeds vary
    draws = bootstrap_means([scores])[:, 0]
    # the bootstrap distribution of a mean of S values resampled with replacement: population sd / sqrt(S)
    assert draws.std() == pytest.approx(per_seed.std(ddof=0) / math.sqrt(per_seed.size), rel=0.06)


def test_a_paired_difference_of_identical_runs_is_exactly_zero_and_languages_share_items():
    runs = (RNG.random((3, 60)) < 0.5).astype(float)
    draws = bootstrap_means([runs - runs, runs, runs.copy()])
    assert np.all(draws[:, 0] == 0)
    assert np.array_equal(draws[:, 1], draws[:, 2])  # the same items drawn for every language
    assert percentile_interval(draws[:, 0], 0.0) == Estimate(0.0, 0.0, 0.0)
    unequal = bootstrap_means([runs, runs[:, :40]])  # different sizes: each language's rows on their own
    assert unequal.shape == (draws.shape[0], 2)


def test_percentile_interval_and_seed_std():
    draws = np.arange(1, 1001, dtype=float)
    interval = percentile_interval(draws, 500.0)
    assert interval.low == pytest.approx(np.percentile(draws, 2.5)) and interval.high == pytest.approx(975.025)
    assert seed_std([0.3, 0.4, 0.5]) == pytest.approx(0.1) and seed_std([0.4]) == 0.0


def test_wilson_interval_matches_its_formula():
    correct, total = 60, 150
    z, p = stats.norm.ppf(0.975), correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    interval = binomial_interval(correct, total)
    assert interval.mean == p
    assert interval.low == pytest.approx(centre - half) and interval.high == pytest.approx(centre + half)


def test_rank_correlation_with_its_interval():
    distances = [0.1, 0.3, 0.5, 0.7]
    monotone = np.tile([0.0, 0.01, 0.02, 0.03], (200, 1))
    assert rank_correlation(distances, monotone, [0.0, 0.01, 0.02, 0.03]) == Estimate(1.0, 1.0, 1.0)
    reversed_ = rank_correlation(distances, monotone[:, ::-1], [0.03, 0.02, 0.01, 0.0])
    assert reversed_.mean == -1.0
    assert rank_correlation(distances[:2], monotone[:, :2], [0.0, 0.1]) is None  # two points say nothing


def test_uriel_distance_puts_german_nearer_english_than_swahili():
    distances = distance_from("en", ["de", "sw", "zh", "xx"])
    assert set(distances) == {"de", "sw", "zh"}  # an unknown code is left out, not guessed
    assert 0 < distances["de"] < distances["zh"] < distances["sw"] < 1


# --- the verdict from confirmation rows -------------------------------------------------------------

LANGUAGES = ["en", "de", "zh", "sw"]


def _rows(trial_number: int, reference: str | None, accuracy: dict[str, float], seeds=(1, 2, 3), rows=90,
          noise: float = 0.0) -> list[TrialRow]:
    """Confirmation rows whose per-row correctness has the given accuracy per language (first rows right)."""
    result = []
    for seed in seeds:
        correct = {}
        for lang, acc in accuracy.items():
            right = max(0, min(rows, round(rows * (acc + noise * (seed - 2)))))
            correct[lang] = "1" * right + "0" * (rows - right)
        result.append(TrialRow(trial_id=f"t{trial_number}{seed}", trial_number=trial_number, status=COMPLETE,
                               params={"translator_depth": 0 if reference == VANILLA else 1, "seed": seed},
                               reference=reference, test_correct=correct, seed=seed,
                               test_accuracy={k: v.count("1") / rows for k, v in correct.items()}))
    return result


def test_a_clearly_better_configuration_is_called_better_with_its_gap_closed():
    vanilla = {"en": 0.6, "de": 0.4, "zh": 0.4, "sw": 0.4}
    mpt = {"en": 0.6, "de": 0.5, "zh": 0.55, "sw": 0.6}
    rows = _rows(0, VANILLA, vanilla) + _rows(1, PAPER_DEFAULT, vanilla) + _rows(5, None, mpt, noise=0.01)
    verdict = build_verdict(rows, LANGUAGES, best_trial=5)
    headline = verdict.headline
    assert headline.name == "MPT (trial 5)" and headline.seeds == [1, 2, 3]
    assert headline.gain[TARGETS].mean == pytest.approx(np.mean([0.1, 0.15, 0.2]), abs=0.01)
    assert headline.gain[TARGETS].low > 0 and headline.conclusion() == "better than vanilla"
    assert verdict.line.startswith("MPT (trial 5) vs vanilla on the 3 target languages: +15.")
    assert verdict.line.endswith("3 paired seeds: better than vanilla")
    gaps = {g.language: g for g in verdict.gaps}
    assert gaps["sw"].vanilla.mean == pytest.approx(0.2, abs=0.01) and gaps["sw"].mpt.mean == pytest.approx(0.0, abs=0.02)
    assert gaps["sw"].share_closed == pytest.approx(1.0, abs=0.1)
    assert verdict.rank_correlation.mean == pytest.approx(1.0)  # the gain grows with distance: de < zh < sw
    paper = next(c for c in verdict.comparisons if c.configuration.reference == PAPER_DEFAULT)
    assert paper.gain[TARGETS] == Estimate(0.0, 0.0, 0.0) and paper.conclusion() == "not distinguishable from vanilla"


def test_noise_is_not_distinguishable_and_a_vanilla_best_trial_is_said_so():
    base = {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4}
    rows = _rows(0, VANILLA, base, noise=0.05) + _rows(1, PAPER_DEFAULT, {**base, "de": 0.41}, seeds=(3, 2, 1),
                                                        noise=-0.05)
    verdict = build_verdict(rows, LANGUAGES, best_trial=0)
    assert "best trial was vanilla itself" in verdict.note
    assert verdict.headline.configuration.reference == PAPER_DEFAULT
    assert verdict.headline.gain[TARGETS].low < 0 < verdict.headline.gain[TARGETS].high
    assert verdict.line.endswith("not distinguishable from vanilla")


def test_no_verdict_without_a_complete_vanilla():
    rows = _rows(5, None, {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4})
    verdict = build_verdict(rows, LANGUAGES, best_trial=5)
    assert verdict.headline is None and verdict.line.startswith("no verdict: the vanilla baseline")
