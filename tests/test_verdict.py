"""The verdict built from confirmation rows (fixed arrays: no training): its line, what the study could detect,
Holm's marks, the transfer gap, the distance analysis and a shot-count sweep. The statistics themselves:
tests/test_intervals.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_spaces import PAPER_DEFAULT, PROBE, VANILLA
from study.intervals import Estimate
from study.language_distance import distance_from
from study.results import COMPLETE, TrialRow
from study.shot_sweep import PLOT_FILE, build_sweep, markdown_sweep, sweep_metrics, sweep_plots
from study.verdict import TARGETS, build_verdict
from study.verdict_report import HOLM_MARK, console_verdict, markdown_verdict, metrics


def test_uriel_distance_puts_german_nearer_english_than_swahili():
    distances = distance_from("en", ["de", "sw", "zh", "xx"])
    assert set(distances) == {"de", "sw", "zh"}  # an unknown code is left out, not guessed
    assert 0 < distances["de"] < distances["zh"] < distances["sw"] < 1


# --- the verdict from confirmation rows -------------------------------------------------------------

LANGUAGES = ["en", "de", "zh", "sw"]


def _rows(
    trial_number: int,
    reference: str | None,
    accuracy: dict[str, float],
    seeds=(1, 2, 3),
    rows=90,
    noise: float = 0.0,
    shots: int | None = None,
) -> list[TrialRow]:
    """Confirmation rows whose per-row correctness has the given accuracy per language (first rows right)."""
    result = []
    for seed in seeds:
        correct = {}
        for lang, acc in accuracy.items():
            right = max(0, min(rows, round(rows * (acc + noise * (seed - 2)))))
            correct[lang] = "1" * right + "0" * (rows - right)
        params = {
            "translator_depth": 0 if reference == VANILLA else 1,
            "seed": seed,
            **({"shots_per_class": shots} if shots else {}),
        }
        result.append(
            TrialRow(
                trial_id=f"t{trial_number}{seed}{shots}",
                trial_number=trial_number,
                status=COMPLETE,
                params=params,
                reference=reference,
                test_correct=correct,
                seed=seed,
                test_accuracy={k: v.count("1") / rows for k, v in correct.items()},
            )
        )
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
    assert (
        f"3 paired seeds: better than vanilla (with 3 seeds this study detects gains >= "
        f"{100 * headline.detectable:.1f} pp" in verdict.line
    )
    assert headline.holm == {"en": False, "de": True, "zh": True, "sw": True}  # English gained nothing
    gaps = {g.language: g for g in verdict.gaps}
    assert gaps["sw"].vanilla.mean == pytest.approx(0.2, abs=0.01)
    assert gaps["sw"].mpt.mean == pytest.approx(0.0, abs=0.02)
    assert gaps["sw"].share_closed == pytest.approx(1.0, abs=0.1)
    assert verdict.rank_correlation == pytest.approx(1.0)  # the gain grows with distance: de < zh < sw
    paper = next(c for c in verdict.comparisons if c.configuration.reference == PAPER_DEFAULT)
    assert paper.gain[TARGETS] == Estimate(0.0, 0.0, 0.0) and paper.conclusion() == "not distinguishable from vanilla"
    assert paper.detectable is None and "agreed on every test row in every seed" in paper.power_note()
    report = "\n".join(markdown_verdict(verdict))
    assert f"| {100 * headline.gain['de'].mean:+.1f} [" in report and f"] {HOLM_MARK} |" in report
    assert "after Holm's correction over the row's 4 per-language gains" in report
    assert "descriptive" in report  # the rank correlation claims no interval


def test_worse_than_vanilla_is_said_so():
    vanilla = {"en": 0.6, "de": 0.5, "zh": 0.5, "sw": 0.5}
    rows = _rows(0, VANILLA, vanilla) + _rows(4, None, {**vanilla, "de": 0.3, "zh": 0.3, "sw": 0.35}, noise=0.01)
    verdict = build_verdict(rows, LANGUAGES, best_trial=4)
    assert verdict.headline.gain[TARGETS].high < 0
    assert "3 paired seeds: worse than vanilla (" in verdict.line


def test_noise_is_not_distinguishable_and_a_vanilla_best_trial_is_said_so():
    base = {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4}
    rows = _rows(0, VANILLA, base, noise=0.05) + _rows(
        1, PAPER_DEFAULT, {**base, "de": 0.41}, seeds=(3, 2, 1), noise=-0.05
    )
    verdict = build_verdict(rows, LANGUAGES, best_trial=0)
    assert "best trial was vanilla itself" in verdict.note
    assert verdict.headline.configuration.reference == PAPER_DEFAULT
    assert verdict.headline.gain[TARGETS].low < 0 < verdict.headline.gain[TARGETS].high
    assert "paired seeds: not distinguishable from vanilla (with 3 seeds" in verdict.line


def test_an_unconfirmed_best_trial_is_said_so():
    base = {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4}
    rows = _rows(0, VANILLA, base) + _rows(1, PAPER_DEFAULT, base)  # no confirmation rows of trial 7, the best
    verdict = build_verdict(rows, LANGUAGES, best_trial=7)
    assert verdict.headline.configuration.reference == PAPER_DEFAULT
    assert "best trial (#7) has no complete confirmation run" in verdict.note


def test_no_verdict_without_a_complete_vanilla():
    rows = _rows(5, None, {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4})
    verdict = build_verdict(rows, LANGUAGES, best_trial=5)
    assert verdict.headline is None and verdict.line.startswith("no verdict: the vanilla baseline")


def test_vanilla_and_an_mpt_best_are_compared_with_the_frozen_probe():
    vanilla = {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4}
    probe = {"en": 0.55, "de": 0.5, "zh": 0.5, "sw": 0.5}  # the linear probe beats vanilla by 10 pp on targets
    mpt = {"en": 0.55, "de": 0.5, "zh": 0.5, "sw": 0.6}
    rows = (
        _rows(0, VANILLA, vanilla, noise=0.01)
        + _rows(1, PAPER_DEFAULT, vanilla)
        + _rows(2, PROBE, probe)
        + _rows(5, None, mpt)
    )
    verdict = build_verdict(rows, LANGUAGES, best_trial=5)
    assert verdict.headline.name == "MPT (trial 5)"  # the probe is a baseline, never the headline
    assert [c.configuration.trial_number for c in verdict.comparisons] == [1, 5]  # gains over vanilla: no probe
    assert "#2 frozen probe" in [s.configuration.label for s in verdict.summaries]  # its row in the tables
    against = {c.name: c for c in verdict.against_probe}
    assert list(against) == ["vanilla", "MPT (trial 5)"]
    assert against["vanilla"].gain[TARGETS].mean == pytest.approx(-0.1, abs=0.005)
    assert (
        against["vanilla"].gain[TARGETS].high < 0 and against["vanilla"].conclusion() == "worse than the frozen probe"
    )
    assert against["MPT (trial 5)"].gain[TARGETS].mean == pytest.approx(0.1 / 3, abs=0.005)
    assert verdict.line.endswith(
        f"; vanilla vs the frozen probe: {against['vanilla'].short}; MPT (trial 5) vs the "
        f"frozen probe: {against['MPT (trial 5)'].short}"
    )
    assert against["vanilla"].short.startswith("-10.0 pp [")
    values = metrics(verdict)
    assert values["gain_vanilla_vs_probe_avg_target"] == pytest.approx(against["vanilla"].gain[TARGETS].mean)
    assert values["gain_best_vs_probe_avg_target_high"] == pytest.approx(against["MPT (trial 5)"].gain[TARGETS].high)
    report = "\n".join(markdown_verdict(verdict))
    assert "| vs the frozen probe |" in report and "| #2 frozen probe | 3 |" in report
    assert "vanilla - probe" in console_verdict(verdict)


def test_a_probe_best_trial_or_an_unknown_reference_is_not_taken_for_mpt():
    base = {"en": 0.5, "de": 0.4, "zh": 0.4, "sw": 0.4}
    rows = _rows(0, VANILLA, base) + _rows(1, PAPER_DEFAULT, base) + _rows(2, PROBE, {**base, "de": 0.5})
    verdict = build_verdict(rows + _rows(3, "newer_reference", base), LANGUAGES, best_trial=2)
    assert "best trial was the frozen probe" in verdict.note
    assert verdict.headline.configuration.reference == PAPER_DEFAULT
    assert [c.name for c in verdict.against_probe] == ["vanilla"]  # the best is no MPT configuration
    assert [c.name for c in verdict.comparisons] == ["paper default", "newer_reference"]
    assert [s.configuration.label for s in verdict.summaries][2:] == ["#2 frozen probe", "#3 newer_reference"]
    assert "gain_best_vs_probe_avg_target" not in metrics(verdict)
    # without a probe (an MLM-verbalizer backbone's study) the line is the headline's alone
    assert "frozen probe" not in build_verdict(rows[:6], LANGUAGES, best_trial=1).line


def test_share_closed_only_where_vanilla_has_a_gap():
    vanilla = {"en": 0.6, "de": 0.6, "zh": 0.7, "sw": 0.4}  # de: no gap; zh: the target beats English
    mpt = {"en": 0.6, "de": 0.65, "zh": 0.7, "sw": 0.5}
    verdict = build_verdict(_rows(0, VANILLA, vanilla) + _rows(2, None, mpt), LANGUAGES, best_trial=2)
    gaps = {g.language: g for g in verdict.gaps}
    assert gaps["de"].vanilla == Estimate(0.0, 0.0, 0.0) and gaps["de"].share_closed is None
    assert gaps["zh"].vanilla.high < 0 and gaps["zh"].share_closed is None
    assert gaps["sw"].share_closed == pytest.approx(0.5)  # 20 points of gap, 10 closed


def test_the_verdict_says_what_the_study_could_detect():
    rng = np.random.default_rng(11)
    base = {"en": 0.6, "de": 0.45, "zh": 0.45, "sw": 0.45}
    rows = []
    for row in _rows(0, VANILLA, base, rows=450) + _rows(3, None, base, rows=450):
        # every (seed, row) right with its own chance, MPT's seeds 3 points apart: seed and residual noise
        lift = 0.03 * (row.seed - 2) if row.trial_number == 3 else 0.0
        row.test_correct = {
            lang: "".join("1" if rng.random() < acc + lift else "0" for _ in range(450)) for lang, acc in base.items()
        }
        rows.append(row)
    verdict = build_verdict(rows, LANGUAGES, best_trial=3)
    components = verdict.headline.components[TARGETS]
    needed = components.seeds_to_detect(0.02)
    assert verdict.headline.detectable > 0.02 and needed > 3
    assert verdict.line.endswith(
        f"(with 3 seeds this study detects gains >= {100 * verdict.headline.detectable:.1f}"
        f" pp; ~{needed} seeds would detect 2 pp)"
    )
    values = metrics(verdict)
    assert values["mde_avg_target"] == verdict.headline.detectable and values["seeds_for_2pp"] == needed
    report = "\n".join(markdown_verdict(verdict))
    assert f"| 3 (this study) | {100 * verdict.headline.detectable:.1f} | 6 |" in report  # 2 configurations x 3
    # 40 rows that disagree across languages: the row term alone is larger than 2 pp
    few = _rows(0, VANILLA, base, rows=40) + _rows(3, None, {"en": 0.6, "de": 0.3, "zh": 0.5, "sw": 0.6}, rows=40)
    note = build_verdict(few, LANGUAGES, best_trial=3).headline.power_note()
    assert "no number of seeds would detect 2 pp on these 40 test rows: their variation alone allows >= " in note
    assert "seeds_for_2pp" not in metrics(build_verdict(few, LANGUAGES, best_trial=3))
    one_seed = build_verdict(_rows(0, VANILLA, base, seeds=(1,)) + _rows(3, None, base, seeds=(1,)), LANGUAGES, 3)
    assert one_seed.line.endswith(
        "1 paired seeds: not distinguishable from vanilla (one seed: the interval leaves "
        "out the seeds' variation, and what the study could detect is unknown)"
    )
    assert "mde_avg_target" not in metrics(one_seed)


def test_a_shot_sweep_gives_a_verdict_per_k_and_the_learning_curve(tmp_path: Path):
    rows = []
    for shots, lift in ((4, 0.0), (16, 0.2)):  # MPT gains only with more shots
        vanilla = {"en": 0.4 + shots / 100, "de": 0.35, "zh": 0.35, "sw": 0.35}
        rows += _rows(0, VANILLA, vanilla, shots=shots) + _rows(1, PAPER_DEFAULT, vanilla, shots=shots)
        rows += _rows(
            5, None, {**vanilla, "de": 0.35 + lift, "zh": 0.35 + lift, "sw": 0.35 + lift}, noise=0.01, shots=shots
        )
    sweep = build_sweep(rows, LANGUAGES, best_trial=5, shots=[16, 4], base_shots=64)
    assert list(sweep.verdicts) == [4, 16] and sweep.headline_shots == 16  # the base K is not swept: the largest
    assert sweep.verdicts[4].headline.conclusion() == "not distinguishable from vanilla"
    assert sweep.verdicts[16].headline.conclusion() == "better than vanilla"
    assert sweep.headline.line.startswith(
        "16 shots per class: MPT (trial 5) vs vanilla on the 3 target languages: +20."
    )
    assert build_sweep(rows, LANGUAGES, 5, [4, 16], base_shots=4).headline_shots == 4
    steps = {(name, step): value for name, value, step in sweep_metrics(sweep)}
    assert steps[("sweep_gain_avg_target", 16)] == pytest.approx(0.2, abs=0.01)
    assert steps[("sweep_trial0_vanilla_test_acc_en", 4)] == pytest.approx(0.44, abs=0.01)
    assert ("sweep_mde_avg_target", 4) in steps
    assert sweep_plots(tmp_path, sweep) and (tmp_path / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    section = "\n".join(markdown_sweep(sweep))
    assert "| 16 | MPT (trial 5) | +20." in section and "| #0 vanilla | 4 | 44.4 [" in section
