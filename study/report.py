"""Write a study's report, results/<study>/report.md with PNG plots (and report.html, the same with the
plots inline: the MLflow UI shows HTML artifacts whole but not images a Markdown file links to), from its
stored results.

    python study/report.py NAME                      # regenerate results/NAME/report.md and .html
    python study/report.py NAME --results-dir DIR    # a study stored under DIR instead of ./results

It reads results/NAME/study.json (settings), trials.json (every trial) and, when `--confirm-top` ran,
confirm.json; `python study/run.py` writes them and calls this at the end of a study. The report
compares the best trial with the vanilla prompt-transfer baseline per language, plots the objective
against every searched hyperparameter and, with enough trials, Optuna's parameter importances.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import re
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib

matplotlib.use("Agg")  # files only: studies run on headless machines
import markdown  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from search_spaces import PAPER_DEFAULT, VANILLA, distributions, get_space  # noqa: E402
from study.results import (COMPLETE, TrialRow, best_row, completed, load_rows, reference_row)  # noqa: E402
from study.settings import (RESULTS_ROOT, StudyError, StudyPaths, load_study_settings, redact,  # noqa: E402
                            write_atomically)

MIN_TRIALS_FOR_IMPORTANCE = 8  # below this fANOVA's importances are noise


@dataclass
class LanguageComparison:
    label: str  # a language code, "average" or "targets"
    best: float | None
    vanilla: float | None
    paper_default: float | None

    @property
    def gain(self) -> float | None:
        return None if self.best is None or self.vanilla is None else self.best - self.vanilla


def compare(best: TrialRow | None, vanilla: TrialRow | None, paper: TrialRow | None,
            languages: Sequence[str]) -> list[LanguageComparison]:
    """Per-language test accuracy of the best trial, the vanilla baseline and the paper-like default."""
    def acc(row: TrialRow | None, lang: str) -> float | None:
        return row.test_accuracy.get(lang) if row and row.status == COMPLETE else None

    def summary(row: TrialRow | None, attribute: str) -> float | None:
        return getattr(row, attribute) if row and row.status == COMPLETE else None

    comparisons = [LanguageComparison(lang, acc(best, lang), acc(vanilla, lang), acc(paper, lang))
                   for lang in languages]
    comparisons.append(LanguageComparison("average", summary(best, "test_average"), summary(vanilla, "test_average"),
                                          summary(paper, "test_average")))
    comparisons.append(LanguageComparison("targets", summary(best, "test_average_target"),
                                          summary(vanilla, "test_average_target"),
                                          summary(paper, "test_average_target")))
    return comparisons


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def format_comparison(comparisons: Sequence[LanguageComparison]) -> str:
    """The console table: test accuracy (%) per language, best trial vs vanilla baseline."""
    header = f"{'language':<10}{'best':>8}{'vanilla':>9}{'gain':>8}{'paper':>8}"
    lines = [header, "-" * len(header)]
    for c in comparisons:
        if c.label == "average":
            lines.append("-" * len(header))
        lines.append(f"{c.label:<10}{_pct(c.best):>8}{_pct(c.vanilla):>9}{_pct(c.gain, True):>8}"
                     f"{_pct(c.paper_default):>8}")
    return "\n".join(lines)


def markdown_comparison(comparisons: Sequence[LanguageComparison]) -> str:
    lines = ["| language | best trial | vanilla | gain (pp) | paper default |", "|---|---:|---:|---:|---:|"]
    for c in comparisons:
        label = f"**{c.label}**" if c.label in ("average", "targets") else c.label
        lines.append(f"| {label} | {_pct(c.best)} | {_pct(c.vanilla)} | {_pct(c.gain, True)} | "
                     f"{_pct(c.paper_default)} |")
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------------

def plot_languages(path: Path, comparisons: Sequence[LanguageComparison]) -> None:
    """Grouped bars: test accuracy per language for the best trial, vanilla and the paper default."""
    labels = [c.label for c in comparisons]
    series = [("best trial", [c.best for c in comparisons]), ("vanilla", [c.vanilla for c in comparisons]),
              ("paper default", [c.paper_default for c in comparisons])]
    width = 0.27
    figure, axes = plt.subplots(figsize=(max(6.0, 0.8 * len(labels)), 4))
    for index, (name, values) in enumerate(series):
        xs = [i + (index - 1) * width for i in range(len(labels))]
        axes.bar(xs, [100 * (v if v is not None else math.nan) for v in values], width, label=name)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Test accuracy per language")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_objective_vs(path: Path, param: str, rows: Sequence[TrialRow], distribution, objective: str) -> None:
    """The objective of every complete trial against one searched hyperparameter (references marked)."""
    figure, axes = plt.subplots(figsize=(5, 3.5))
    choices = getattr(distribution, "choices", None)
    for is_reference, colour, label in ((False, "tab:blue", "searched"), (True, "tab:orange", "reference")):
        chosen = [r for r in rows if bool(r.reference) == is_reference and param in r.params]
        if not chosen:
            continue
        xs = [choices.index(r.params[param]) if choices else r.params[param] for r in chosen]
        axes.scatter(xs, [100 * r.objective for r in chosen], c=colour, label=label, alpha=0.8)
    if choices:
        axes.set_xticks(range(len(choices)), [str(c) for c in choices])
    elif getattr(distribution, "log", False):
        axes.set_xscale("log")
    axes.set_xlabel(param)
    axes.set_ylabel(f"objective: {objective} (%)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parameter_importances(rows: Sequence[TrialRow], space_name: str) -> dict[str, float] | None:
    """Optuna's fANOVA importances of the searched parameters, or None with too few trials."""
    space = get_space(space_name)
    done = completed(rows)
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or len(space.params) < 2:
        return None
    dists = distributions(space)
    study = optuna.create_study(direction="maximize")
    for row in done:
        params = {p: row.params[p] for p in space.params if p in row.params}
        if len(params) != len(dists):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=row.objective))
    if len(study.trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same report every time
        return optuna.importance.get_param_importances(study, evaluator=evaluator)


def plot_importances(path: Path, importances: dict[str, float]) -> None:
    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(5, 0.5 * len(names) + 1.5))
    axes.barh(names, [importances[n] for n in names])
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("Optuna parameter importances")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- confirmation ------------------------------------------------------------------------------------

@dataclass
class ConfirmSummary:
    trial_number: int
    reference: str | None
    params: dict[str, Any]
    seeds: list[int]
    mean: dict[str, float]  # language, "average", "targets" -> mean accuracy over seeds
    std: dict[str, float]


def summarise_confirmation(rows: Sequence[TrialRow], languages: Sequence[str]) -> list[ConfirmSummary]:
    """Mean and sample standard deviation over seeds of each confirmed configuration."""
    summaries = []
    for number in sorted({r.trial_number for r in rows}):
        runs = [r for r in rows if r.trial_number == number and r.status == COMPLETE]
        if not runs:
            continue
        values: dict[str, list[float]] = {lang: [r.test_accuracy[lang] for r in runs] for lang in languages}
        values["average"] = [r.test_average for r in runs]
        values["targets"] = [r.test_average_target for r in runs]
        summaries.append(ConfirmSummary(
            trial_number=number, reference=runs[0].reference,
            params={k: v for k, v in runs[0].params.items() if k != "seed"}, seeds=[r.seed for r in runs],
            mean={k: statistics.fmean(v) for k, v in values.items()},
            std={k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in values.items()}))
    return summaries


def format_confirmation(summaries: Sequence[ConfirmSummary], languages: Sequence[str]) -> str:
    labels = [*languages, "average", "targets"]
    header = f"{'trial':<18}" + "".join(f"{label:>14}" for label in labels)
    lines = [header, "-" * len(header)]
    for s in summaries:
        name = f"#{s.trial_number}" + (f" {s.reference}" if s.reference else "")
        lines.append(f"{name:<18}" + "".join(f"{100 * s.mean[l]:>7.1f} ±{100 * s.std[l]:>5.1f}" for l in labels))
    return "\n".join(lines)


def markdown_confirmation(summaries: Sequence[ConfirmSummary], languages: Sequence[str]) -> str:
    labels = [*languages, "average", "targets"]
    lines = ["| trial | seeds | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for s in summaries:
        name = f"#{s.trial_number}" + (f" ({s.reference})" if s.reference else "")
        cells = [f"{100 * s.mean[l]:.1f} ± {100 * s.std[l]:.1f}" for l in labels]
        lines.append(f"| {name} | {', '.join(map(str, s.seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------------------------

def write_report(paths: StudyPaths) -> str:
    """Write report.md, report.html and the plots into the study folder; return the console summary."""
    settings = load_study_settings(paths)
    if not paths.trials_file.is_file():
        raise StudyError(f"study {paths.name!r} has no results yet ({paths.trials_file} is missing): resume it "
                         f"with `python study/run.py --space {settings.space} --name {paths.name} --resume`")
    rows = load_rows(paths.trials_file)
    config = settings.config
    languages = config.languages
    space = get_space(settings.space)
    best, vanilla, paper = best_row(rows), reference_row(rows, VANILLA), reference_row(rows, PAPER_DEFAULT)
    comparisons = compare(best, vanilla, paper, languages)
    study_dir = paths.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)

    plots: list[tuple[str, str]] = []
    plot_languages(study_dir / "per_language.png", comparisons)
    plots.append(("Test accuracy per language: best trial, vanilla baseline, paper-like default",
                  "per_language.png"))
    dists = distributions(space)
    done = completed(rows)
    for param in space.params:
        name = f"objective_vs_{param}.png"
        plot_objective_vs(study_dir / name, param, done, dists[param], settings.objective)
        plots.append((f"Objective vs `{param}`", name))
    importances = parameter_importances(rows, settings.space)
    if importances:
        plot_importances(study_dir / "importances.png", importances)
        plots.append(("Optuna parameter importances (fANOVA)", "importances.png"))

    counts = {status: sum(r.status == status for r in rows) for status in sorted({r.status for r in rows})}
    lines = [f"# Study `{paths.name}`", "",
             f"- space: `{settings.space}` ({space.summary.rstrip('.')}), searching {', '.join(space.params)}",
             f"- objective: `{settings.objective}`, scheduler: `{settings.scheduler}`, seed {settings.seed}"
             + (", smoke settings" if settings.smoke else ""),
             f"- trials: {len(rows)} of {settings.num_samples} planned ("
             + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + ")",
             f"- base config: backbone `{config.backbone}` (num_layers {config.num_layers}), data `{config.data}`, "
             f"{config.shots_per_class} shots per class, {config.epochs} epochs, "
             f"max_eval_examples {config.max_eval_examples}",
             f"- MLflow: experiment `{paths.name}` at `{redact(settings.mlflow_tracking_uri)}`", ""]
    lines += ["## Best trial vs vanilla prompt transfer", ""]
    if best is None:
        lines += ["No trial completed, so there is no best trial.", ""]
    else:
        shown = {k: v for k, v in best.params.items() if k in space.params or k in ("translator_depth",
                                                                                    "alignment_weight")}
        lines += [f"Best trial: #{best.trial_number}" + (f" ({best.reference})" if best.reference else "")
                  + f", objective {_pct(best.objective)}%, values {shown}.", ""]
    if vanilla is None or vanilla.status != COMPLETE:
        lines += ["The vanilla baseline did not complete"
                  + (f" ({vanilla.status.lower()}: {vanilla.error})" if vanilla else "") + ".", ""]
    lines += ["Test accuracy (%) with the best-dev checkpoint; gain = best trial - vanilla.", "",
              markdown_comparison(comparisons), ""]
    lines += ["## Trials", "", "| # | reference | status | objective (%) | test avg (%) | targets (%) | values |",
              "|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.params.items() if k in space.params)
        status = r.status.lower() + (f": {r.error}" if r.error else "")
        lines.append(f"| {r.trial_number} | {r.reference or ''} | {status} | {_pct(r.objective)} | "
                     f"{_pct(r.test_average)} | {_pct(r.test_average_target)} | {values} |")
    lines.append("")
    summaries: list[ConfirmSummary] = []
    if paths.confirm_file.is_file():
        summaries = summarise_confirmation(load_rows(paths.confirm_file), languages)
        lines += ["## Confirmation over few-shot seeds", "",
                  "Test accuracy (%), mean ± sample standard deviation over seeds the search did not use.", "",
                  markdown_confirmation(summaries, languages), ""]
    lines += ["## Plots", ""]
    for title, name in plots:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    if not importances:
        lines += [f"(Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials and two "
                  "searched parameters.)", ""]
    write_atomically(paths.report_file, "\n".join(lines))
    write_atomically(paths.report_html_file, report_html(paths.name, "\n".join(lines), paths.study_dir))

    console = [f"Study {paths.name}: test accuracy (%) per language, best trial"
               + (f" #{best.trial_number}" if best else "") + " vs vanilla baseline", format_comparison(comparisons)]
    if summaries:
        console += ["", "Confirmation (mean ± std over seeds):", format_confirmation(summaries, languages)]
    console.append(f"\nreport: {paths.report_file}")
    return "\n".join(console)


HTML_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;line-height:1.4}"
              "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .5em}"
              "td{text-align:right}img{max-width:100%}")


def report_html(name: str, report_markdown: str, study_dir: Path) -> str:
    """The Markdown report as one self-contained HTML page: every linked PNG of study_dir inlined."""
    body = markdown.markdown(report_markdown, extensions=["tables"])

    def inline(match: re.Match) -> str:
        plot = study_dir / html.unescape(match.group(1))
        if plot.suffix != ".png" or not plot.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Study {html.escape(name)}</title>'
            f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python study/report.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("name", help="the study name (its folder under --results-dir)")
    parser.add_argument("--results-dir", default=str(RESULTS_ROOT), help="where studies are stored")
    args = parser.parse_args(argv)
    paths = StudyPaths(args.name, Path(args.results_dir).resolve(), "")
    try:
        print(write_report(paths))
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
