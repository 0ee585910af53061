"""The verdict's statistics: a two-level paired bootstrap over seeds and test rows, with NumPy and SciPy.

Why this interval. A confirmed accuracy varies for two reasons: the few-shot seed (sample, initialisation,
batch order) and the test set (a finite sample of items). A t-interval over seeds sees only the first, since
every seed is scored on the same test rows; a bootstrap over rows within one seed only the second. Each
bootstrap draw here resamples both: S seeds with replacement and the n test rows with replacement, and takes
the mean over the drawn seeds of the mean over the drawn rows. The draws are paired: one draw of rows serves
every configuration and every seed (a difference is computed per row, so the noise the two configurations
share cancels), and every language (the test sets are translations of one set, so row i is one item in every
language and a language average must resample items, not rows per language). Test sets of different sizes
(a user's own data) are resampled per language instead. The 95% interval is the percentile interval of the
draws. With few seeds (3 by default) the seed level is coarse and the interval is, if anything, narrow on the
seed side: more seeds (`--confirm-seeds`) tighten it honestly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 0  # the report is the same every time it is written


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval (same unit as the mean)."""

    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def bootstrap_means(scores: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, languages] bootstrap draws of each language's mean of `scores`, one array [seeds, rows] per
    language (1/0 correctness, or paired differences of it): seeds and rows resampled as the module docstring
    says, the rows shared by all languages when their counts agree."""
    scores = [np.asarray(array, dtype=float) for array in scores]
    rng = np.random.default_rng(seed)
    seed_weights = _weights(rng, scores[0].shape[0], resamples)
    shared = len({array.shape[1] for array in scores}) == 1
    row_weights = _weights(rng, scores[0].shape[1], resamples) if shared else None
    columns = [np.einsum("bs,sn,bn->b", seed_weights, array,
                         row_weights if shared else _weights(rng, array.shape[1], resamples))
               for array in scores]
    return np.stack(columns, axis=1)


def _weights(rng: np.random.Generator, count: int, resamples: int) -> np.ndarray:
    """[resamples, count]: how often each of `count` items one bootstrap draw picks, over `count` (resampling
    with replacement, as multinomial counts rather than indices)."""
    return rng.multinomial(count, np.full(count, 1 / count), size=resamples) / count


def percentile_interval(draws: np.ndarray, point: float) -> Estimate:
    """The point estimate with the central CONFIDENCE percentile interval of its bootstrap draws."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high))


def seed_std(per_seed: Sequence[float]) -> float:
    """Sample standard deviation over seeds (0 for one seed)."""
    return float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0


def rank_correlation(x: Sequence[float], y_draws: np.ndarray, y: Sequence[float]) -> Estimate | None:
    """Spearman's rho of `y` (e.g. MPT's gain per language) against `x` (distance from English), with the
    percentile interval over the bootstrap draws `y_draws` [resamples, len(x)]; None below three points, where a
    rank correlation says nothing."""
    if len(x) < 3:
        return None
    with warnings.catch_warnings():  # a draw with tied gains everywhere has no rank correlation: dropped below
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        point = stats.spearmanr(x, y).statistic
        draws = np.array([stats.spearmanr(x, row).statistic for row in y_draws])
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(point) or draws.size == 0:
        return None
    return percentile_interval(draws, point)


def binomial_interval(correct: int, total: int) -> Estimate:
    """One accuracy from one run: its Wilson 95% interval over the rows (SciPy's binomtest)."""
    interval = stats.binomtest(correct, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Estimate(correct / total, float(interval.low), float(interval.high))
