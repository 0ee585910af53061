"""Named Optuna search spaces for MPT studies, and the reference points every study evaluates first.

A space is a define-by-run function `define(trial) -> config overrides` whose parameter names are
`mpt.config.MPTConfig` fields, plus the tuple of fields it searches. Add a space by writing a module
with `PARAMS` and `define` and registering it in `SPACES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search_spaces import alignment, full, prompt, translator


@dataclass(frozen=True)
class SearchSpace:
    """A named define-by-run space over `MPTConfig` fields."""

    name: str
    summary: str
    define: Callable[[optuna.Trial], dict[str, Any]]
    params: tuple[str, ...]


SPACES: dict[str, SearchSpace] = {
    module.__name__.rsplit(".", 1)[-1]: SearchSpace(
        name=module.__name__.rsplit(".", 1)[-1],
        summary=(module.__doc__ or "").strip().splitlines()[0],
        define=module.define,
        params=tuple(module.PARAMS),
    )
    for module in (alignment, prompt, translator, full)
}

# Evaluated first by every study, whatever the space, so its report can state MPT's gain per
# language over vanilla prompt transfer (identity translator, no alignment task) and show the
# paper-like default (one translator layer, alignment weight 0.5).
VANILLA = "vanilla"
PAPER_DEFAULT = "paper_default"
REFERENCE_POINTS: dict[str, dict[str, Any]] = {
    VANILLA: {"translator_depth": 0, "alignment_weight": 0.0},
    PAPER_DEFAULT: {"translator_depth": 1, "alignment_weight": 0.5},
}


class UnknownSpaceError(ValueError):
    """The requested space does not exist; the message lists the spaces that do."""


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise UnknownSpaceError(f"unknown search space {name!r}: choose one of {', '.join(SPACES)}")
    return SPACES[name]


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every parameter of `space` (recorded from one throwaway trial)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per call
    try:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    finally:
        optuna.logging.set_verbosity(verbosity)
    space.define(trial)
    return trial.distributions


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` is one the distribution can produce (so Optuna can record it as a point)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(value == choice and type(value) is type(choice) for choice in distribution.choices)
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def reference_points(space: SearchSpace, base_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Reference name -> the full point to evaluate: the base config's values for the searched
    parameters (where the space can represent them) with the reference's fixed values on top."""
    dists = distributions(space)
    points = {}
    for name, fixed in REFERENCE_POINTS.items():
        point = {p: base_config[p] for p in space.params if p in base_config and contains(dists[p], base_config[p])}
        point.update(fixed)
        points[name] = point
    return points
