"""Write a study's report, results/<study>/report.md with PNG plots (and report.html, the same with the
plots inline: the MLflow UI shows HTML artifacts whole but not images a Markdown file links to), from its
stored results.

    python study/report.py NAME                      # regenerate results/NAME/report.md and .html
    python study/report.py NAME --results-dir DIR    # a study stored under DIR instead of ./results

It reads results/NAME/study.json (settings), trials.json (every search trial) and, unless the study ran with
`--no-confirm`, confirm.json (the confirmation runs); `python study/run.py` writes them and calls this at the end
of a study. The report opens with the verdict (study.verdict: MPT vs vanilla over paired seeds, with intervals,
what the study could detect, the transfer gap and the gain against distance from English; with --confirm-shots a
verdict per K and the learning curve, study.shot_sweep), then the search: its best trial against the
reference points on dev (one seed), every trial, the objective against every searched hyperparameter and, with
enough trials, Optuna's parameter importances.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: `study` must import from this very checkout (study/checkout.py)
    runpy.run_path(str(Path(__file__).with_name("checkout.py")))["require_this_checkout"](__file__)

import markdown  # noqa: E402

from search_spaces import PAPER_DEFAULT, PROBE, VANILLA, get_space  # noqa: E402
from study.environment import command  # noqa: E402
from study.errors import StudyError  # noqa: E402
from study.intervals import Estimate, binomial_interval  # noqa: E402
from study.optuna_storage import MIN_TRIALS_FOR_IMPORTANCE, SearchedParameters, optuna_storage_url, searched_parameters  # noqa: E402
from study.paths import RESULTS_ROOT, StudyPaths, write_atomically  # noqa: E402
from study.results import COMPLETE, TrialRow, best_row, completed, load_rows, reference_row  # noqa: E402
from study.search_figures import parameter_importances, plot_importances, plot_objective_vs  # noqa: E402
from study.settings import load_study_settings  # noqa: E402
from study.shot_sweep import ShotSweep, build_sweep, console_sweep, markdown_sweep, sweep_metrics, sweep_plots  # noqa: E402
from study.uris import redact  # noqa: E402
from study.verdict import Verdict, build_verdict  # noqa: E402
from study.verdict_report import CHANCE, console_verdict, markdown_verdict, plot_estimates, verdict_plots  # noqa: E402

NO_VERDICT = "none: the study ran without the confirmation (--no-confirm), so no test accuracy was measured"


@dataclass
class LanguageComparison:
    """One language's accuracy in the single-seed search trials: the best trial, vanilla, the paper default, the
    frozen probe."""

    label: str  # a language code
    best: Estimate | None
    vanilla: Estimate | None
    paper_default: Estimate | None
    probe: Estimate | None = None

    @property
    def gain(self) -> float | None:
        return None if self.best is None or self.vanilla is None else self.best.mean - self.vanilla.mean


def single_run_estimate(row: TrialRow | None, lang: str, split: str) -> Estimate | None:
    """A search trial's accuracy on `split` ("dev" at its selected epoch, or "test" under --test-in-search) with
    its Wilson interval over the rows: one seed, so the interval covers the rows only."""
    if row is None or row.status != COMPLETE:
        return None
    if split == "test":
        rows = row.test_correct.get(lang)
        return binomial_interval(rows.count("1"), len(rows)) if rows else None
    accuracy, total = row.dev_accuracy.get(lang), row.dev_rows.get(lang)
    return binomial_interval(round(accuracy * total), total) if accuracy is not None and total else None


def compare_search_trials(
    best: TrialRow | None,
    vanilla: TrialRow | None,
    paper: TrialRow | None,
    languages: Sequence[str],
    split: str = "dev",
    probe: TrialRow | None = None,
) -> list[LanguageComparison]:
    """Per-language accuracy of the best search trial, the vanilla baseline, the paper-like default and the
    frozen probe."""
    return [
        LanguageComparison(lang, *(single_run_estimate(row, lang, split) for row in (best, vanilla, paper, probe)))
        for lang in languages
    ]


def _pct(value: float | Estimate | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, Estimate):
        return f"{100 * value.mean:.1f} [{100 * value.low:.1f}, {100 * value.high:.1f}]"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def markdown_comparison(comparisons: Sequence[LanguageComparison]) -> str:
    lines = [
        "| language | best trial | vanilla | difference (pp) | paper default | frozen probe |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.label} | {_pct(c.best)} | {_pct(c.vanilla)} | {_pct(c.gain, True)} | "
            f"{_pct(c.paper_default)} | {_pct(c.probe)} |"
        )
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------------------------


@dataclass
class WrittenReport:
    summary: str  # what the console shows: it ends with the verdict line
    verdict: Verdict | None  # None without a confirmation; the headline K's in a shot-count sweep
    sweep: ShotSweep | None = None  # a shot-count sweep's verdicts (--confirm-shots)

    @property
    def verdict_line(self) -> str:
        """The study's answer in one line (what the console prints last, after `Verdict: `)."""
        return self.verdict.line if self.verdict is not None else NO_VERDICT

    @property
    def metric_steps(self) -> list[tuple[str, float, int]]:
        """(name, value, step) of the metrics logged against a step (a sweep's, step = K)."""
        return sweep_metrics(self.sweep) if self.sweep is not None else []


def write_report(paths: StudyPaths) -> WrittenReport:
    """Write report.md, report.html and the plots into the study folder; return the console summary and the
    verdict."""
    settings = load_study_settings(paths)
    if not paths.trials_file.is_file():
        raise StudyError(
            f"study {paths.name!r} has no results yet ({paths.trials_file} is missing): resume it "
            f"with `{command('study')} --space {settings.space} --name {paths.name} --resume`"
        )
    rows = load_rows(paths.trials_file)
    languages = settings.base_config.languages
    best = best_row(rows)
    study_dir = paths.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    verdict, sweep = None, None
    if paths.confirm_file.is_file():
        confirm_rows, best_number = load_rows(paths.confirm_file), best.trial_number if best else None
        if settings.confirm_shots:
            sweep = build_sweep(
                confirm_rows, languages, best_number, settings.confirm_shots, settings.base_config.shots_per_class
            )
            verdict = sweep.headline
        else:
            verdict = build_verdict(confirm_rows, languages, best_number)

    plots = verdict_plots(study_dir, verdict) if verdict else []
    if sweep is not None:
        plots += sweep_plots(study_dir, sweep)
    split = "test" if settings.test_in_search else "dev"
    comparisons = compare_search_trials(
        best,
        reference_row(rows, VANILLA),
        reference_row(rows, PAPER_DEFAULT),
        languages,
        split,
        reference_row(rows, PROBE),
    )
    plot_estimates(
        study_dir / "search_per_language.png",
        [
            (name, {c.label: getattr(c, attribute) for c in comparisons if getattr(c, attribute)})
            for name, attribute in (
                ("best trial", "best"),
                ("vanilla", "vanilla"),
                ("paper default", "paper_default"),
                ("frozen probe", "probe"),
            )
        ],
        list(languages),
        f"{split} accuracy (%)",
        f"Search trials (one seed each): {split} accuracy, 95% intervals over the rows",
    )
    plots.append((f"Search trials, one seed each: {split} accuracy per language", "search_per_language.png"))
    # what each trial searched: Optuna's record of it, in the study's Optuna storage
    searched = searched_parameters(optuna_storage_url(settings.optuna_storage, study_dir), settings.name)
    done = completed(rows)
    for param, distribution in searched.distributions.items():
        name = f"objective_vs_{param}.png"
        plot_objective_vs(study_dir / name, param, done, distribution, settings.objective, searched)
        plots.append((f"Objective vs `{param}`", name))
    importances = parameter_importances(searched)
    if importances:
        plot_importances(study_dir / "importances.png", importances)
        plots.append(("Optuna parameter importances (PED-ANOVA)", "importances.png"))

    lines = [
        f"# Study `{paths.name}`",
        "",
        *_verdict_section(verdict),
        *chance_note(),
        *(markdown_sweep(sweep) if sweep else []),
        *_settings_lines(paths, settings, rows, searched),
        *_search_section(rows, best, comparisons, split, searched),
        "## Plots",
        "",
    ]
    for title, name in plots:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    if searched.problem:
        lines += [f"(No per-parameter plots or importances: {searched.problem}.)", ""]
    elif not importances:
        lines += [
            f"(Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials and two "
            "searched parameters.)",
            "",
        ]
    write_atomically(paths.report_file, "\n".join(lines))
    write_atomically(paths.report_html_file, report_html(paths.name, "\n".join(lines), paths.study_dir))

    console = [f"report: {paths.report_file}", ""]
    if verdict is None:
        console.append(f"Verdict: {NO_VERDICT}")
    else:
        console.append(console_verdict(verdict, console_sweep(sweep) if sweep else ()))
    return WrittenReport("\n".join(console), verdict, sweep)


def _verdict_section(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return [
            "## Verdict",
            "",
            "**No verdict: the study ran without the confirmation (`--no-confirm`).** The search "
            "ranks trials on dev with one seed each; the test set was not looked at.",
            "",
        ]
    return markdown_verdict(verdict)


def chance_note() -> list[str]:
    """What an accuracy near chance means, in words (the plots draw it as a dashed line)."""
    return [
        f"**Chance level is {100 * CHANCE:.1f}%.** NLI has three labels, balanced in XNLI and in the mini set, "
        f"so a model that guesses scores about {100 * CHANCE:.0f}%: an accuracy near it (here, in any table "
        "below) means the model learned little or nothing that shows on that language, and a gain between two "
        "such accuracies is real only where its interval says so.",
        "",
    ]


def _settings_lines(paths: StudyPaths, settings, rows: Sequence[TrialRow], searched: SearchedParameters) -> list[str]:
    config, space = settings.base_config, get_space(settings.space)
    counts = {status: sum(r.status == status for r in rows) for status in sorted({r.status for r in rows})}
    return [
        "## Study",
        "",
        f"- space: `{settings.space}` ({space.summary.rstrip('.')}), searching "
        f"{', '.join(searched.names) or 'nothing Optuna recorded'}",
        f"- Optuna: study `{settings.name}` in "
        f"`{redact(optuna_storage_url(settings.optuna_storage, paths.study_dir))}`",
        f"- objective: `{settings.objective}`, scheduler: `{settings.scheduler}`, seed {settings.seed}"
        + (", smoke settings" if settings.smoke else ""),
        f"- trials: {len(rows)} of {settings.num_samples} planned ("
        + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        + ")",
        f"- confirmation: the {settings.confirm_top} best and the references x "
        f"{settings.confirm_seeds} paired seeds"
        + (f" x {', '.join(map(str, settings.confirm_shots))} shots per class" if settings.confirm_shots else "")
        if settings.confirm_top
        else "- confirmation: none",
        f"- base config: backbone `{config.backbone}` (num_layers {config.num_layers}), data `{config.data}`, "
        f"{config.shots_per_class} shots per class, {config.epochs} epochs, "
        f"max_eval_examples {config.max_eval_examples}",
        f"- MLflow: experiment `{paths.name}` at `{redact(settings.mlflow_tracking_uri)}`",
        "",
    ]


def _search_section(
    rows: Sequence[TrialRow],
    best: TrialRow | None,
    comparisons: Sequence[LanguageComparison],
    split: str,
    searched: SearchedParameters,
) -> list[str]:
    """The search trials: the best one against the references per language (one seed), then every trial."""
    lines = ["## Search: best trial vs vanilla prompt transfer (one seed each)", ""]
    vanilla = reference_row(rows, VANILLA)
    if best is None:
        lines += ["No trial completed, so there is no best trial.", ""]
    else:
        shown = {
            k: v
            for k, v in best.params.items()
            if k in searched.of(best.trial_number) or k in ("translator_depth", "alignment_weight")
        }
        lines += [
            f"Best trial: #{best.trial_number}"
            + (f" ({best.reference})" if best.reference else "")
            + f", objective {_pct(best.objective)}%, values {shown}.",
            "",
        ]
    if vanilla is None or vanilla.status != COMPLETE:
        lines += [
            "The vanilla baseline did not complete"
            + (f" ({vanilla.status.lower()}: {vanilla.error})" if vanilla else "")
            + ".",
            "",
        ]
    where = "dev accuracy at the selected epoch" if split == "dev" else "test accuracy (--test-in-search)"
    lines += [
        f"{where.capitalize()} (%), one seed per trial, with 95% Wilson intervals over the rows (they leave "
        "out the seed's variation, which the verdict above includes): these picked the best trial, they do "
        "not measure it.",
        "",
        markdown_comparison(comparisons),
        "",
    ]
    lines += [
        "## Trials",
        "",
        "| # | reference | status | objective (%) | "
        + " | ".join(f"dev {c.label}" for c in comparisons)
        + " | values |",
        "|---:|---|---|---:|" + "---:|" * len(comparisons) + "---|",
    ]
    for r in rows:
        values = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.params.items()
            if k in searched.of(r.trial_number)
        )
        status = r.status.lower() + (f": {r.error}" if r.error else "")
        dev = " | ".join(_pct(r.dev_accuracy.get(c.label)) for c in comparisons)
        lines.append(f"| {r.trial_number} | {r.reference or ''} | {status} | {_pct(r.objective)} | {dev} | {values} |")
    return [*lines, ""]


HTML_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .5em}"
    "td{text-align:right}img{max-width:100%}"
)


def report_html(name: str, report_markdown: str, study_dir: Path) -> str:
    """The Markdown report as one self-contained HTML page: every linked PNG of study_dir inlined."""
    body = markdown.markdown(report_markdown, extensions=["tables"])

    def inline(match: re.Match) -> str:
        plot = study_dir / html.unescape(match.group(1))
        if plot.suffix != ".png" or not plot.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Study {html.escape(name)}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command("report"),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("name", help="the study name (its folder under --results-dir)")
    parser.add_argument("--results-dir", default=str(RESULTS_ROOT), help="where studies are stored")
    args = parser.parse_args(argv)
    paths = StudyPaths(args.name, Path(args.results_dir).resolve(), "")
    try:
        print(write_report(paths).summary)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
