"""The verdict's statistics: a variance-components interval for paired seeds x test rows, what a study of that
size could detect, and Holm's correction across languages (NumPy, SciPy, statsmodels).

The model. The confirmation scores every configuration with the same S seeds on the same n test rows, so a
paired difference (or one configuration's 1/0 correctness) is a crossed two-way layout, d[s, i] = mu + a_s +
b_i + e_si: a seed effect a (the few-shot sample, initialisation, batch order), a row effect b (the item: the
test set is a sample of items too) and what is left, e. Seeds and rows are both random samples, so the mean over
the layout has Var = sigma_a^2 / S + sigma_b^2 / n + sigma_e^2 / (S n), which the two-way ANOVA's mean squares
estimate without bias as (MS_seed + MS_row - MS_resid) / (S n) (the same decomposition holds for any crossed
design with independent rows and columns, Bernoulli scores included: Owen 2007, "The pigeonhole bootstrap").
Written as two terms: seed / S, where `seed` = MS_seed / n is the sample variance of the S per-seed means (seed
effect plus residual; S - 1 degrees of freedom), and row = (MS_row - MS_resid) / (S n) = sigma_b^2 / n, set to 0
when its estimate is negative (n - 1 degrees of freedom). The 95% interval is mean +- sqrt(t_{S-1}^2 seed / S +
t_{n-1}^2 row): each term scaled by its own estimate's t quantile, Banerjee's (1960) interval for a sum of
independently estimated variances, never narrower than Satterthwaite's (checked over a grid of ratios). Where seeds
dominate it is the t-interval over seeds; where rows dominate, a t-interval over rows.

Pairing and languages. A difference is taken per (seed, row) before anything else, so what two configurations
share cancels. Test sets that are translations of one another (same row count) have one item per row, so a
language average is this analysis of the per-(seed, row) average over languages, never languages treated as
independent samples; test sets of different sizes (a user's own data) fall back to per-language row terms, the
seed term taken on the per-seed average.

Why this and not the alternatives, measured by the seeded simulation in tests/test_intervals.py (450 items with
a difficulty shared by both configurations, a random offset per (configuration, seed); docs/statistics.md has
the table): the two-level percentile bootstrap it replaces (seeds and rows resampled with replacement) sees no
more than the S values drawn and uses what are in effect normal quantiles for a 3-point sample, so with 3 seeds
it excluded the true value in 11.1-11.6% of replicates where seeds vary; Satterthwaite's degrees of freedom, the
textbook choice, pool the two terms' degrees of freedom from the estimates themselves, and with 2 for the seed
term they rise exactly when the seeds happen to agree: up to 7.4% at 3 seeds. The t-interval over seeds alone
misses the row term, which is large for a configuration's accuracy (19.9% at 10 seeds). This interval stayed
within Monte-Carlo error of nominal in every cell (2.9-5.6%), and at most 1.1% wider than the t-interval over
seeds where that is exact.

What a study could detect: at two-sided level alpha and power 1 - beta the minimum detectable effect is the same
combination with (t_{1-alpha/2} + t_{1-beta}) for each term (Bloom 1995's (t + t) * SE, term by term), for any
number of seeds S' on the same rows: seed / S' shrinks, row does not, so with too few test rows no number of
seeds reaches a given effect.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
POWER = 0.80  # the power the minimum detectable effect is stated at
MAX_SEEDS = 10_000  # seeds_to_detect looks no further


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval (same unit as the mean)."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class VarianceComponents:
    """A mean over S seeds and n test rows and the estimated parts of its variance: Var = seed / S + row.

    `seed` is the variance of one seed's value (its seed effect plus its rows' residual noise; S - 1 degrees of
    freedom), `row` what the test rows add (sigma_b^2 / n, the same whatever the seeds; n - 1 degrees of
    freedom). Fields are arrays, one per replicate, when `variance_components` was given stacked arrays."""

    mean: float
    seeds: int
    seed: float
    row: float
    rows: int  # the test rows (the fewest of any language when their counts differ)

    def variance(self, seeds: int | None = None) -> float:
        return self.seed / (self.seeds if seeds is None else seeds) + self.row

    def _reach(self, quantiles: Sequence[float], seeds=None):
        """sqrt((sum of t quantiles at S - 1 df)^2 seed / S + (the same at n - 1 df)^2 row): each term scaled by
        its own estimate's quantiles (Banerjee 1960), for `seeds` seeds (default: the study's)."""
        seeds = self.seeds if seeds is None else seeds
        with np.errstate(invalid="ignore"):  # one seed: no seed term (0 x nan)
            seed_q = sum(stats.t.ppf(q, np.maximum(seeds - 1, 0)) for q in quantiles)
            seed_part = np.where(self.seed > 0, seed_q**2 * self.seed / seeds, 0.0)
        row_q = sum(stats.t.ppf(q, max(self.rows - 1, 1)) for q in quantiles)
        return np.sqrt(seed_part + row_q**2 * self.row)

    def interval(self, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-np.inf, np.inf)) -> Estimate:
        """The interval, cut to `bounds` where the true value must lie (an accuracy in [0, 1]): that never
        excludes it, so coverage stays what it was."""
        half = self._reach([0.5 + confidence / 2])
        return Estimate(
            _scalar(self.mean),
            _scalar(np.maximum(self.mean - half, bounds[0])),
            _scalar(np.minimum(self.mean + half, bounds[1])),
        )

    def p_value(self) -> float:
        """Two-sided p-value of mean = 0: 1 - the largest confidence whose interval excludes 0 (so it is below
        1 - CONFIDENCE exactly when the interval excludes 0). Scalars only."""
        if self.mean == 0:
            return 1.0
        if self.variance() == 0:
            return 0.0
        return float(
            optimize.brentq(lambda alpha: float(self._reach([1 - alpha / 2])) - abs(self.mean), 1e-15, 1.0, xtol=1e-12)
        )

    def detectable(self, seeds: int | None = None, power: float = POWER, confidence: float = CONFIDENCE) -> float:
        """The minimum detectable effect: the smallest true difference this design finds with `power` (two-sided
        at `confidence`), for `seeds` seeds (default: the study's) on the same test rows."""
        return _scalar(self._reach([0.5 + confidence / 2, power], seeds))

    def detectable_with_unlimited_seeds(self, power: float = POWER, confidence: float = CONFIDENCE) -> float:
        """What infinitely many seeds on these test rows would detect: the row term's floor."""
        row_q = sum(stats.t.ppf(q, max(self.rows - 1, 1)) for q in (0.5 + confidence / 2, power))
        return _scalar(row_q * np.sqrt(self.row))

    def seeds_to_detect(self, effect: float, power: float = POWER, confidence: float = CONFIDENCE) -> int | None:
        """The fewest seeds (>= 2) that detect `effect` on these test rows, or None when no number up to
        MAX_SEEDS does (`detectable_with_unlimited_seeds` says whether the rows alone forbid it)."""
        candidates = np.arange(2, MAX_SEEDS + 1)
        enough = np.flatnonzero(self._reach([0.5 + confidence / 2, power], candidates) <= effect)
        return int(candidates[enough[0]]) if enough.size else None


def _scalar(value):
    """A 0-d array as a float; arrays (stacked replicates) as they are."""
    value = np.asarray(value, dtype=float)
    return float(value) if value.ndim == 0 else value


def _floats(array) -> np.ndarray:
    """An array of scores as floating point (float32 stays float32: the tests' simulation stacks many)."""
    array = np.asarray(array)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(float)


def variance_components(arrays: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> VarianceComponents:
    """The estimate sum_l w_l * mean(arrays[l]) (w_l = 1 / L unless given, e.g. (1, -1) for English minus a
    language) and its variance components, as the module docstring says. arrays[l] is [..., seeds, rows_l]: 1/0
    correctness or paired differences, the seeds in the same order in every array; leading axes are independent
    replicates (the tests' simulation stacks them)."""
    arrays = [_floats(array) for array in arrays]
    weights = np.full(len(arrays), 1 / len(arrays)) if weights is None else np.asarray(weights, dtype=float)
    if len({array.shape[-2] for array in arrays}) != 1:
        raise ValueError("every array needs the same seeds: " + ", ".join(str(a.shape) for a in arrays))
    if len(arrays) > 1 and len({array.shape for array in arrays}) == 1:
        # translations of one test set: row i is one item in every language, so combine per (seed, row) first
        arrays, weights = [sum(w * array for w, array in zip(weights, arrays))], np.ones(1)
    seeds = arrays[0].shape[-2]
    per_seed = sum(w * array.mean(axis=-1) for w, array in zip(weights, arrays))  # [..., seeds]
    row = 0.0
    for w, array in zip(weights, arrays):
        n = array.shape[-1]
        seed_means, row_means = array.mean(axis=-1), array.mean(axis=-2)
        grand = seed_means.mean(axis=-1)
        ms_row = seeds * row_means.var(axis=-1, ddof=1) if n > 1 else 0.0
        ms_resid = 0.0
        if seeds > 1 and n > 1:  # SS_total - SS_seed - SS_row, in one pass over the array
            squares = (
                (array * array).sum(axis=(-2, -1))
                - n * (seed_means**2).sum(axis=-1)
                - seeds * (row_means**2).sum(axis=-1)
                + seeds * n * grand**2
            )
            ms_resid = np.maximum(squares, 0.0) / ((seeds - 1) * (n - 1))
        # w^2 sigma_b^2 / n, a negative estimate being 0 (with one seed: the rows' whole spread, residual included)
        row = row + np.maximum(w**2 * (ms_row - ms_resid) / (seeds * n), 0.0)
    # the spread of the per-seed values (seed effect plus residual); unknown with one seed: 0, rows only
    seed = per_seed.var(axis=-1, ddof=1) if seeds > 1 else np.zeros(per_seed.shape[:-1])
    return VarianceComponents(
        _scalar(per_seed.mean(axis=-1)), seeds, _scalar(seed), _scalar(row), min(array.shape[-1] for array in arrays)
    )


def holm_distinguishable(p_values: Sequence[float], confidence: float = CONFIDENCE) -> list[bool]:
    """Which of several comparisons stay distinguishable from 0 at family-wise level 1 - confidence after Holm's
    step-down correction (statsmodels' multipletests)."""
    from statsmodels.stats.multitest import multipletests

    if not len(p_values):
        return []
    # multipletests' Holm branch ends with gc.collect(): 0.35 s a call in a study's process, where torch, MLflow and
    # Ray are loaded (measured here), and a report makes one call per comparison; frozen objects are not traversed
    gc.freeze()
    try:
        reject = multipletests(list(p_values), alpha=1 - confidence, method="holm")[0]
    finally:
        gc.unfreeze()
    return [bool(r) for r in reject]


def seed_std(per_seed: Sequence[float]) -> float:
    """Sample standard deviation over seeds (0 for one seed)."""
    return float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho of `y` (e.g. MPT's gain per language) against `x` (distance from English): descriptive
    (a handful of languages, each gain itself uncertain, so no interval is claimed); None below three points or
    when either side is constant."""
    if len(x) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = stats.spearmanr(x, y).statistic
    return float(rho) if np.isfinite(rho) else None


def binomial_interval(correct: int, total: int) -> Estimate:
    """One accuracy from one run: its Wilson 95% interval over the rows (SciPy's binomtest)."""
    interval = stats.binomtest(correct, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Estimate(correct / total, float(interval.low), float(interval.high))
