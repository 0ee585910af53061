"""Named Optuna search spaces for MPT studies, and the reference points every study evaluates first.

A space is a define-by-run function `define(trial, base)` that suggests `mpt.config.MPTConfig` fields on an
Optuna trial, conditionally: a parameter that does nothing in a trial is not suggested in it. `base` is the
study's base config as the dict of its fields (`MPTConfig.to_dict()`), for ranges that depend on it (the CE-only
epochs go up to its epochs). What a trial searched is Optuna's own record of it (`trial.params`,
`trial.distributions`): no list of parameters is kept beside the function. Add a space by writing a module with
`define` and registering it in `SPACES`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from search_spaces import alignment, full, kl, prompt, translator


@dataclass(frozen=True)
class SearchSpace:
    """A named define-by-run space over `MPTConfig` fields."""

    name: str
    summary: str
    define: Callable[[optuna.Trial, Mapping[str, Any]], None]


SPACES: dict[str, SearchSpace] = {
    module.__name__.rsplit(".", 1)[-1]: SearchSpace(
        name=module.__name__.rsplit(".", 1)[-1],
        summary=(module.__doc__ or "").strip().splitlines()[0],
        define=module.define,
    )
    for module in (alignment, kl, prompt, translator, full)
}

# Evaluated first by every study, whatever the space, so its report can state MPT's gain per
# language over vanilla prompt transfer (identity translator, no alignment task), show the
# paper-like default (one translator layer, alignment weight 0.5) and the frozen probe (no prompt, no
# translator: a linear head on the frozen encoder's features), which a prompt method has to beat. The probe
# needs a linear head: a study on a backbone answering through its MLM verbalizer skips it (`skip` below).
VANILLA = "vanilla"
PAPER_DEFAULT = "paper_default"
PROBE = "probe"
REFERENCE_POINTS: dict[str, dict[str, Any]] = {
    VANILLA: {"translator_depth": 0, "alignment_weight": 0.0},
    PAPER_DEFAULT: {"translator_depth": 1, "alignment_weight": 0.5},
    PROBE: {"prompt_length": 0, "translator_depth": 0, "alignment_weight": 0.0},
}
REFERENCE_LABELS = {VANILLA: "vanilla", PAPER_DEFAULT: "paper default", PROBE: "frozen probe"}


class UnknownSpaceError(ValueError):
    """The requested space does not exist; the message lists the spaces that do."""


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise UnknownSpaceError(f"unknown search space {name!r}: choose one of {', '.join(SPACES)}")
    return SPACES[name]


def probe(
    space: SearchSpace, base: Mapping[str, Any], values: Mapping[str, Any], seed: int = 0
) -> optuna.trial.FrozenTrial:
    """Optuna's record of the trial `space` suggests when every parameter it asks for takes its value from
    `values` (a value out of its range too; parameters `values` lacks are drawn at random, seeded), made in a
    throwaway in-memory study: which parameters such a trial searches, with their distributions."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "new study created" line per call
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        study.enqueue_trial(dict(values))
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "out of range": contains() below decides what to keep
            space.define(trial, base)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study.trials[0]


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` is one the distribution can produce (so Optuna can record it as a point)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(value == choice and type(value) is type(choice) for choice in distribution.choices)
    kind = int if isinstance(distribution, IntDistribution) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step  # an int distribution's values are whole steps from its low end
    return step is None or (value - distribution.low) % step == 0


def reference_points(
    space: SearchSpace, base_config: Mapping[str, Any], skip: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """Reference name -> the values Optuna enqueues for it (the references named in `skip` left out): the
    reference's fixed values and, for the other parameters the space suggests at those values, the base
    config's (where the space can represent them; Optuna draws the rest). Fixed values the space does not
    search, or cannot represent (the probe's prompt length 0 in a space searching 4..64), are not enqueued:
    the study sets them in the trial's config (`study.search.SpaceWithReferences`); a searched parameter whose
    fixed value Optuna refuses is enqueued at the base config's value, so that Optuna records a value it can
    represent rather than a random draw."""
    points = {}
    for name, fixed in REFERENCE_POINTS.items():
        if name in skip:
            continue
        wanted = {**base_config, **_enqueueable(space, base_config, fixed)}
        record = probe(space, base_config, wanted)
        points[name] = {
            p: wanted[p] for p, dist in record.distributions.items() if p in wanted and contains(dist, wanted[p])
        }
    return points


def _enqueueable(space: SearchSpace, base_config: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed values Optuna accepts as enqueued values of `space`: it refuses some out-of-range ones
    outright (0 on a log scale), which then stay at the base config's value in Optuna's record."""
    accepted = {}
    for param, value in fixed.items():
        try:
            probe(space, base_config, {**base_config, param: value})
        except ValueError:
            continue
        accepted[param] = value
    return accepted
