"""The verdict as the report and the console show it: tables (gains marked by Holm's correction, accuracies, the
transfer gap), what the study could detect and the trade of seeds against it, the verdict line, and its two plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: studies run on headless machines
import matplotlib.pyplot as plt  # noqa: E402

from study.intervals import CONFIDENCE, MAX_SEEDS, POWER, Estimate  # noqa: E402
from study.verdict import AVERAGE, DISTANCE_NOTE, EFFECT_OF_INTEREST, TARGETS, Comparison, Verdict  # noqa: E402

CHANCE = 1 / 3  # three NLI labels
HOLM_MARK = "†"
SEED_TRADE = (2, 3, 5, 10, 20)  # the numbers of seeds whose detectable effect the report lists


def _pp(estimate: Estimate, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * estimate.mean:{sign}.1f} [{100 * estimate.low:{sign}.1f}, {100 * estimate.high:{sign}.1f}]"


def _gain_cell(comparison: Comparison, label: str) -> str:
    """A gain with its interval, marked where it stays distinguishable after Holm's correction."""
    return _pp(comparison.gain[label], True) + (f" {HOLM_MARK}" if comparison.holm.get(label) else "")


def holm_note(verdict: Verdict) -> str:
    return (
        f"{HOLM_MARK}: distinguishable from 0 after Holm's correction over the row's {len(verdict.languages)} "
        f"per-language gains (family-wise {100 * (1 - CONFIDENCE):.0f}%, statsmodels' multipletests); an "
        "unmarked interval that excludes 0 may be one of several comparisons' chance findings. The target "
        "average, the headline, is the one comparison fixed in advance and needs no correction."
    )


def markdown_power(verdict: Verdict) -> list[str]:
    """What the study could have detected on the target average, and the trade of seeds against it."""
    headline = verdict.headline
    components = headline.components[TARGETS]
    if headline.detectable is None:
        return [f"**What this study could detect**: unknown ({headline.power_note()}).", ""]
    effect, floor = 100 * EFFECT_OF_INTEREST, 100 * components.detectable_with_unlimited_seeds()
    needed = components.seeds_to_detect(EFFECT_OF_INTEREST)
    configurations = len(verdict.summaries)
    if headline.detectable <= EFFECT_OF_INTEREST:
        plan = f"It can see {effect:.0f} pp."
    elif needed is not None:
        plan = f"About {needed} seeds ({configurations * needed} confirmation runs) would detect {effect:.0f} pp."
    elif floor >= effect:
        plan = f"{effect:.0f} pp is out of reach of more seeds: it needs more test rows."
    else:
        plan = f"More than {MAX_SEEDS} seeds would be needed for {effect:.0f} pp."
    if components.row > 0:
        rows = (
            f"More seeds shrink only the seed term ({1e4 * components.seed:.2f} pp² per seed); the row term "
            f"({1e4 * components.row:.2f} pp²) stays, so on these {components.rows} test rows no number of "
            f"seeds detects less than {floor:.1f} pp."
        )
    else:
        rows = (
            f"The row term is 0 here, so more seeds shrink the whole variance (the seed term: "
            f"{1e4 * components.seed:.2f} pp² per seed)."
        )
    lines = [
        f"**What this study could detect** (target average, {100 * POWER:.0f}% power, two-sided "
        f"{100 * (1 - CONFIDENCE):.0f}%, from the variances it estimated): gains of "
        f"{100 * headline.detectable:.1f} pp or more with its {components.seeds} seeds. {rows} {plan}",
        "",
        "| seeds | detects gains >= (pp) | confirmation runs |",
        "|---:|---:|---:|",
    ]
    for seeds in sorted({*SEED_TRADE, components.seeds, *([needed] if needed else [])}):
        mark = " (this study)" if seeds == components.seeds else ""
        lines.append(f"| {seeds}{mark} | {100 * components.detectable(seeds):.1f} | {configurations * seeds} |")
    return [*lines, ""]


def markdown_verdict(verdict: Verdict) -> list[str]:
    """The report's opening section: the verdict line, the paired gains, the accuracies, the transfer gap and
    the distance analysis."""
    labels = [*verdict.languages, AVERAGE, TARGETS]
    level = f"{100 * CONFIDENCE:.0f}%"
    lines = ["## Verdict", "", f"**{verdict.line}**", ""]
    if verdict.note:
        lines += [f"({verdict.note}.)", ""]
    if verdict.headline is None:
        return lines
    seeds = ", ".join(map(str, verdict.headline.seeds))
    lines += [
        f"Test accuracy differences in percentage points against vanilla prompt transfer (translator depth 0, "
        f"no alignment), paired by seed (seeds {seeds}: the same few-shot sample, batch order and "
        f"initialisation of the prompt and head) and by test row, with {level} intervals from the variance "
        f"of seeds and test rows (a crossed random-effects model; docs/statistics.md and study/intervals.py "
        f"say why). An interval that contains 0 means the study cannot tell the two apart.",
        "",
        "| vs vanilla | " + " | ".join(labels) + " | verdict |",
        "|---|" + "---:|" * len(labels) + "---|",
    ]
    for c in verdict.comparisons:
        lines.append(f"| {c.name} | " + " | ".join(_gain_cell(c, label) for label in labels) + f" | {c.conclusion()} |")
    if verdict.against_probe:
        lines += [
            "",
            "Against the frozen probe (the linear head on the frozen encoder's features: no prompt, no "
            "translator), paired the same way: a prompt method that cannot beat it has learnt nothing a "
            "linear classifier on the encoder's features would not.",
            "",
            "| vs the frozen probe | " + " | ".join(labels) + " | verdict |",
            "|---|" + "---:|" * len(labels) + "---|",
        ]
        for c in verdict.against_probe:
            lines.append(
                f"| {c.name} | " + " | ".join(_gain_cell(c, label) for label in labels) + f" | {c.conclusion()} |"
            )
    lines += ["", holm_note(verdict), "", *markdown_power(verdict)]
    lines += [
        f"Test accuracy (%) per configuration: mean over seeds [{level} interval], and the seed standard deviation.",
        "",
        "| configuration | seeds | " + " | ".join(labels) + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for s in verdict.summaries:
        cells = [f"{_pp(s.accuracy[label])} ±{100 * s.std[label]:.1f}" for label in labels]
        lines.append(f"| {s.configuration.label} | {len(s.configuration.seeds)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Transfer gap",
        "",
        f"English accuracy minus each language's (pp, {level} intervals): what zero-shot transfer loses, and "
        f"what share of vanilla's gap {verdict.headline.name} closes (shown only where vanilla has a gap "
        "whose interval excludes 0).",
        "",
        f"| language | vanilla's gap | {verdict.headline.name}'s gap | share closed |",
        "|---|---:|---:|---:|",
    ]
    for gap in verdict.gaps:
        share = "no gap to close" if gap.share_closed is None else f"{100 * gap.share_closed:.0f}%"
        lines.append(f"| {gap.language} | {_pp(gap.vanilla, True)} | {_pp(gap.mpt, True)} | {share} |")
    lines += [
        "",
        "### Gain against distance from English",
        "",
        f"({DISTANCE_NOTE}.)",
        "",
        "| language | distance | gain (pp) |",
        "|---|---:|---:|",
    ]
    for lang in sorted(verdict.distances, key=verdict.distances.get):
        lines.append(f"| {lang} | {verdict.distances[lang]:.2f} | {_pp(verdict.headline.gain[lang], True)} |")
    rho = verdict.rank_correlation
    if rho is None:
        lines += ["", "Spearman rank correlation: needs at least three target languages with a known distance.", ""]
    else:
        lines += [
            "",
            f"Spearman rank correlation of the gain with the distance: {rho:+.2f}, descriptive (a rank "
            f"over {len(verdict.distances)} languages, each gain itself uncertain: no interval is claimed). "
            "The paper's claim (MPT helps most on distant languages) predicts a positive correlation.",
            "",
        ]
    return lines


def console_verdict(verdict: Verdict, before: Sequence[str] = ()) -> str:
    """What `study/run.py` prints last: the per-language gains with intervals, then `before` (a shot-count
    sweep's other verdicts) and the verdict line."""
    if verdict.headline is None:
        return "\n".join([*before, f"Verdict: {verdict.line}"])
    labels = [*verdict.languages, AVERAGE, TARGETS]
    differences = [(f"{c.name} - vanilla", c) for c in verdict.comparisons] + [
        (f"{c.name} - probe", c) for c in verdict.against_probe
    ]
    names = [s.configuration.label for s in verdict.summaries] + [name for name, _ in differences]
    width = max(map(len, names)) + 2
    lines = [
        "Confirmation: test accuracy (%) over paired seeds, mean [95% interval]",
        f"{'':<{width}}" + "".join(f"{label:>24}" for label in labels),
    ]
    for s in verdict.summaries:
        lines.append(f"{s.configuration.label:<{width}}" + "".join(f"{_pp(s.accuracy[label]):>24}" for label in labels))
    for name, c in differences:
        lines.append(f"{name:<{width}}" + "".join(f"{_gain_cell(c, label):>24}" for label in labels))
    lines.append(f"({HOLM_MARK}: distinguishable after Holm's correction over the per-language gains)")
    rho = verdict.rank_correlation
    if rho is not None:
        lines.append(f"gain vs distance from English (Spearman, descriptive): {rho:+.2f}")
    lines += ["", *([f"({verdict.note})"] if verdict.note else []), *before, f"Verdict: {verdict.line}"]
    return "\n".join(lines)


def plot_estimates(
    path: Path, series: list[tuple[str, dict[str, Estimate]]], labels: list[str], ylabel: str, title: str
) -> None:
    """Accuracy per language of each series with its 95% error bars and the chance line; the y-axis spans the
    data (not from 0, which would hide the differences), the legend outside the axes."""
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2.5), 4))
    for index, (name, estimates) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * 0.8 / max(len(series), 1)
        shown = [estimates.get(label) for label in labels]
        xs = [i + offset for i, e in enumerate(shown) if e is not None]
        shown = [e for e in shown if e is not None]
        axes.errorbar(
            xs,
            [100 * e.mean for e in shown],
            capsize=3,
            fmt="o",
            label=name,
            yerr=[[100 * (e.mean - e.low) for e in shown], [100 * (e.high - e.mean) for e in shown]],
        )
    axes.axhline(100 * CHANCE, color="grey", linestyle="--", linewidth=1, label="chance (33.3%)")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_gain_vs_distance(path: Path, verdict: Verdict) -> None:
    """The headline configuration's gain over vanilla per target language against its distance from English."""
    languages = sorted(verdict.distances, key=verdict.distances.get)
    gains = [verdict.headline.gain[lang] for lang in languages]
    figure, axes = plt.subplots(figsize=(6, 4))
    xs = [verdict.distances[lang] for lang in languages]
    axes.errorbar(
        xs,
        [100 * g.mean for g in gains],
        fmt="o",
        capsize=3,
        yerr=[[100 * (g.mean - g.low) for g in gains], [100 * (g.high - g.mean) for g in gains]],
    )
    for x, lang, gain in zip(xs, languages, gains):
        axes.annotate(lang, (x, 100 * gain.mean), textcoords="offset points", xytext=(5, 5))
    axes.axhline(0, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("distance from English (URIEL syntax, cosine)")
    axes.set_ylabel(f"{verdict.headline.name} - vanilla (pp)")
    rho = verdict.rank_correlation
    axes.set_title("Gain against distance" + (f": Spearman {rho:+.2f} (descriptive)" if rho is not None else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def verdict_plots(study_dir: Path, verdict: Verdict) -> list[tuple[str, str]]:
    """Write the verdict's plots; (title, file name) of each."""
    if verdict.headline is None:
        return []
    plot_estimates(
        study_dir / "confirmed_accuracy.png",
        [(s.configuration.label, s.accuracy) for s in verdict.summaries],
        [*verdict.languages, TARGETS],
        "test accuracy (%)",
        f"Test accuracy, mean over {len(verdict.headline.seeds)} paired seeds with 95% intervals",
    )
    plots = [("Confirmed test accuracy per language (95% intervals, chance dashed)", "confirmed_accuracy.png")]
    if verdict.distances:
        plot_gain_vs_distance(study_dir / "gain_vs_distance.png", verdict)
        plots.append(
            (f"{verdict.headline.name}'s gain over vanilla against distance from English", "gain_vs_distance.png")
        )
    return plots


def metrics(verdict: Verdict) -> dict[str, float]:
    """The verdict's headline numbers for the study's MLflow run: the gain on the target average with its interval
    ends, what the study could detect there (`mde_avg_target`) and how many seeds would detect 2 pp
    (`seeds_for_2pp`, left out where no number up to MAX_SEEDS would), and against the frozen probe
    (`gain_vanilla_vs_probe_avg_target`, `gain_best_vs_probe_avg_target` for an MPT best, each with `_low` and
    `_high`). Per-language numbers are the confirmation
    runs' metrics and the study run's description (study.mlflow_views): as metrics of one run each would chart as a
    bar of its own."""
    values: dict[str, float] = {}
    headline = verdict.headline
    if headline is not None:
        gain = headline.gain[TARGETS]
        values.update(gain_avg_target=gain.mean, gain_avg_target_low=gain.low, gain_avg_target_high=gain.high)
        if headline.detectable is not None:
            values["mde_avg_target"] = headline.detectable
            needed = headline.components[TARGETS].seeds_to_detect(EFFECT_OF_INTEREST)
            if needed is not None:
                values[f"seeds_for_{100 * EFFECT_OF_INTEREST:.0f}pp"] = needed
    for comparison in verdict.against_probe:
        gain = comparison.gain[TARGETS]
        name = "vanilla" if comparison.configuration.reference else "best"
        key = f"gain_{name}_vs_probe_avg_target"
        values.update({key: gain.mean, f"{key}_low": gain.low, f"{key}_high": gain.high})
    return values
