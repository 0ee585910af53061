"""What a researcher sees first of a study in the MLflow UI: the study run's description, which opens with the
study's answer, and the experiment's saved view "Best vs references, per language".

The description (the study run's `mlflow.note.content`, which the UI renders as Markdown at the top of the run's
page) opens with the verdict line in full (the `verdict` tag's column cuts it), the best trial and the references
with links to their runs, and where the per-language numbers are: a link to the saved view, and a table of them.

The saved view is what the runs page's "Views" menu saves: an experiment tag `mlflow.sharedViewState.<key>` holding
the runs table's state as JSON (`{"name", "createdAt", "state"}`, `state` the filter, columns, their widths and
the grouping), which the UI lists under "Views" and opens from `?viewStateShareKey=<key>`. It is MLflow 3's own
format, not a documented API: tests/test_ui.py checks in Chromium that the UI shows what it asks for. The view
lists the runs whose `mpt_study.role` is set (the best trial's and the references', search and confirmation
alike), grouped by role and phase (a group row averages a configuration's seeds, and groups show runs that the
table otherwise folds under the study run), with test accuracy per language (the confirmation's) and dev accuracy
per language at the selected epoch (the search's) as columns wide enough to read their names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from study.results import TrialRow
from study.tracking import PHASE_TAG, REPORT_ARTIFACT_DIR, ROLE_TAG, run_role, study_description
from study.ui import experiment_route, run_route
from trainable.metrics import AVERAGE_TARGET, SELECTED_DEV_PREFIX, TEST_PREFIX

VIEW_KEY = "mpt-study-per-language"
VIEW_NAME = "Best vs references, per language"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # where the UI's "Views" menu keeps a saved view
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the runs table's column ids (the UI's own)
RUN_NAME_WIDTH = 580  # pixels: the group rows' names ("Group: mpt_study.role: best (vanilla), mpt_study.phase: ...")
CHART_MODE = "compareRunsMode=CHART"  # the runs page's chart view (a bar per group, a chart per metric)


def metric_column(metric: str) -> str:
    return f"metrics.`{metric}`"


def column_width(title: str) -> int:
    """Pixels that show a column title whole (the UI's default, 100, cuts `selected_dev_acc_de` to 14 letters)."""
    return max(100, 8 * len(title) + 36)


def per_language_metrics(languages: Sequence[str]) -> list[str]:
    """The view's columns: test accuracy per language and on the target average, then dev per language."""
    return (
        [f"{TEST_PREFIX}{lang}" for lang in languages]
        + [f"{TEST_PREFIX}{AVERAGE_TARGET}"]
        + [f"{SELECTED_DEV_PREFIX}{lang}" for lang in languages]
    )


def per_language_view_state(languages: Sequence[str]) -> dict[str, Any]:
    """The runs table's state the saved view holds (the UI's keys; what it leaves out keeps the UI's default)."""
    columns = [metric_column(metric) for metric in per_language_metrics(languages)]
    return {
        "searchFilter": f"tags.`{ROLE_TAG}` IS NOT NULL",
        "selectedColumns": columns,
        "columnOrder": [RUN_NAME_COLUMN, *columns],
        "columnWidths": {
            RUN_NAME_COLUMN: RUN_NAME_WIDTH,
            **{metric_column(metric): column_width(metric) for metric in per_language_metrics(languages)},
        },
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": ROLE_TAG}, {"mode": "tag", "groupByData": PHASE_TAG}],
        },
        # the chart view of the same runs: test accuracy, a chart per language, a bar per group
        "chartsSearchFilter": TEST_PREFIX,
    }


def experiment_description(name: str) -> str:
    """What the experiment is, above its runs table (Markdown; the UI shows its first line or two)."""
    return (
        f"MPT hyperparameter study {name}. The run named {name} opens with the verdict, the best trial and the "
        f'references; the view "{VIEW_NAME}" ("Views", top right) puts their accuracy per language side by '
        f"side. The trials are the runs nested under the study run, named `<space>-<trial number> <key values>`; "
        f"the study run's artifacts `{REPORT_ARTIFACT_DIR}/` hold the report and its plots."
    )


def saved_view(languages: Sequence[str], now_ms: int) -> str:
    """The value of VIEW_TAG: the view's name, when it was made, and its state (a JSON string inside)."""
    return json.dumps(
        {
            "name": VIEW_NAME,
            "createdAt": now_ms,
            "updatedAt": now_ms,
            "state": json.dumps(per_language_view_state(languages)),
        }
    )


def view_route(experiment_id: str, charts: bool = False) -> str:
    return experiment_route(experiment_id, f"viewStateShareKey={VIEW_KEY}" + (f"&{CHART_MODE}" if charts else ""))


@dataclass(frozen=True)
class RunLink:
    """A search trial's MLflow run: its name and its route in the UI."""

    name: str
    route: str


def search_run_links(runs: Sequence, experiment_id: str) -> dict[int, RunLink]:
    """Trial number -> its search run's link, from the runs (MLflow `Run`s) of the search phase."""
    return {
        int(run.data.tags["trial_number"]): RunLink(run.info.run_name, run_route(experiment_id, run.info.run_id))
        for run in runs
        if "trial_number" in run.data.tags
    }


def final_description(
    name: str,
    params: Mapping[str, Any],
    verdict_line: str,
    verdict,
    rows: Sequence[TrialRow],
    best: TrialRow | None,
    links: Mapping[int, RunLink],
    experiment_id: str,
    languages: Sequence[str],
) -> str:
    """The study run's description once the study ended (Markdown): the verdict, the best trial and the references
    with links, where the per-language numbers are and a table of them, then what the run is
    (`study_description`). `verdict` is the report's (`study.verdict.Verdict`, None without a confirmation)."""
    lines = [f"**Verdict:** {verdict_line}", ""]
    if verdict is not None and verdict.note:
        lines += [f"({verdict.note}.)", ""]
    lines += [_best_and_references(rows, best, links, params.get("objective")), ""]
    lines += [
        f"**Per-language accuracy:** the view [{VIEW_NAME}]({view_route(experiment_id)}) ([test accuracy as "
        f"charts]({view_route(experiment_id, charts=True)})), or the table below.",
        "",
    ]
    lines += _accuracy_table(verdict, rows, best, languages)
    lines += [
        "",
        f'The view (saved under "Views" above the runs table) lists the runs whose tag `{ROLE_TAG}` is '
        f"set, the best trial's and the references', grouped by role and phase: `{TEST_PREFIX}<lang>` of the "
        f"confirmation runs (a group's row averages its seeds) and `{SELECTED_DEV_PREFIX}<lang>` of the "
        f"search runs (dev at the epoch English dev selected).",
    ]
    return "\n".join([*lines, "", study_description(name, params)])


def _role(row: TrialRow, best: TrialRow | None) -> str:
    return run_role(row.reference, best is not None and row.trial_number == best.trial_number)


def _link(number: int, links: Mapping[int, RunLink]) -> str:
    link = links.get(number)
    return f"[{link.name}]({link.route})" if link else f"trial {number} (no MLflow run)"


def _best_and_references(
    rows: Sequence[TrialRow], best: TrialRow | None, links: Mapping[int, RunLink], objective: str | None
) -> str:
    if best is None:
        text = "**Best trial:** none (no trial completed)"
    else:
        score = f", objective `{objective}` {100 * best.objective:.1f}%" if best.objective is not None else ""
        text = f"**Best trial:** {_link(best.trial_number, links)} (#{best.trial_number}{score})"
    references = [_link(row.trial_number, links) for row in rows if row.reference]  # their names say which
    return text + ("; **references:** " + ", ".join(references) if references else "") + "."


def _accuracy_table(verdict, rows: Sequence[TrialRow], best: TrialRow | None, languages: Sequence[str]) -> list[str]:
    """Per-language accuracy (%) of the best trial and the references: the confirmation's test accuracy (mean over
    its seeds) when there is a verdict, else the search's dev accuracy (one seed)."""
    if verdict is not None and verdict.summaries:
        labels = [*languages, "targets"]
        seeds = len(verdict.summaries[0].configuration.seeds)
        lines = [
            f"Test accuracy (%), mean over {seeds} paired seeds (the confirmation):",
            "",
            "| configuration | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for summary in verdict.summaries:
            configuration = summary.configuration
            is_best = best is not None and configuration.trial_number == best.trial_number
            role = run_role(configuration.reference, is_best)
            lines.append(
                f"| #{configuration.trial_number} {role or configuration.label.split(' ', 1)[1]} | "
                + " | ".join(f"{100 * summary.accuracy[label].mean:.1f}" for label in labels)
                + " |"
            )
        if verdict.headline is not None:
            lines.append(
                f"| {verdict.headline.name} - vanilla (pp) | "
                + " | ".join(f"{100 * verdict.headline.gain[label].mean:+.1f}" for label in labels)
                + " |"
            )
        for comparison in verdict.against_probe:
            lines.append(
                f"| {comparison.name} - frozen probe (pp) | "
                + " | ".join(f"{100 * comparison.gain[label].mean:+.1f}" for label in labels)
                + " |"
            )
        return lines
    shown = [row for row in rows if row.reference or (best is not None and row.trial_number == best.trial_number)]
    lines = [
        "Dev accuracy (%) at the selected epoch, one seed (the search):",
        "",
        "| configuration | " + " | ".join(languages) + " |",
        "|---|" + "---:|" * len(languages),
    ]
    for row in shown:
        cells = [f"{100 * row.dev_accuracy[lang]:.1f}" if lang in row.dev_accuracy else "n/a" for lang in languages]
        lines.append(f"| #{row.trial_number} {_role(row, best)} | " + " | ".join(cells) + " |")
    return lines
