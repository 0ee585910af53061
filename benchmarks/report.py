"""RESULTS.md: the run's machine and command, a table of every target, each target's section, the GPU
record, how FLOPs are counted, why missed targets were missed, fixes made for them, notes, final lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import RunContext
from benchmarks.flops import flop_notes
from benchmarks.machine import git_commit
from benchmarks.registry import Target
from benchmarks.timing import spread

QUICK_NOTE = (
    "**--quick run**: a reduced pass (smaller backbone, fewer repeats, smoke-sized trials) that checks "
    "the code paths; its verdicts are not the benchmarks'. Run `python -m benchmarks.run` for those."
)


@dataclass(frozen=True)
class RunInfo:
    """How and where the run ran."""

    command: str
    started: str  # a UTC date and time
    wall_s: float
    machine: dict[str, str]  # cpu, software, threads (`benchmarks.machine.machine_info`)
    loads: tuple[str, str]  # load average at start, at end


def header(info: RunInfo) -> list[str]:
    machine = info.machine
    return [
        "# Benchmarks (issue 7)",
        "",
        *([QUICK_NOTE, ""] if "--quick" in info.command else []),
        f"- command: `{info.command}`",
        f"- date: {info.started} (wall {info.wall_s / 60:.1f} min)",
        f"- commit: {git_commit()}",
        f"- machine: {machine['cpu']}",
        f"- software: {machine['software']}",
        f"- threads: {machine['threads']}",
        f"- load average (1/5/15 min) at start: {info.loads[0]}; at end: {info.loads[1]} -- a shared machine: "
        "each comparison is a ratio of interleaved, repeated measurements taken side by side",
    ]


def summary_table(ctx: RunContext, targets: tuple[Target, ...]) -> list[str]:
    lines = ["| # | benchmark | what | measured: median [min-max] (n) | target | result |", "|---|---|---|---|---|---|"]
    for target in targets:
        outcome = ctx.outcomes[target.name]
        measured = spread(outcome.values) if outcome.values else "-"
        result = ("met" if outcome.met else "missed") if outcome.values else (outcome.skipped or "skipped")
        lines.append(f"| {target.item} | `{target.name}` | {target.what} | {measured} | {target.target} | {result} |")
    return lines


def sections(ctx: RunContext, targets: tuple[Target, ...]) -> list[str]:
    lines: list[str] = []
    for target in targets:
        outcome = ctx.outcomes[target.name]
        lines += ["", f"## {target.item}. `{target.name}` ({target.target})", ""]
        lines += outcome.details or [outcome.skipped or "not run"]
    lines += ["", "## GPU: XLM-R-base training step, fp32 and bf16", "", *ctx.gpu_lines]
    lines += ["", "## How FLOPs are counted", "", flop_notes(ctx.flop_encoder_config)]
    return lines


def closing(ctx: RunContext, targets: tuple[Target, ...]) -> list[str]:
    lines: list[str] = []
    missed = [t for t in targets if ctx.outcomes[t.name].values and not ctx.outcomes[t.name].met]
    if missed:
        lines += ["", "## Missed targets: why", ""]
        lines += [f"- `{t.name}`: {t.why_missed or 'see its section above.'}" for t in missed]
    lines += ["", "## Fixes in mpt/ (before / after)", ""]
    lines += [f"- `{f.file}`: {f.what} ({f.why}); before {f.before}, after {f.after}" for f in ctx.fixes] or [
        "none: no change to `mpt/model.py` or `mpt/training.py` was made for these benchmarks."
    ]
    if ctx.notes:
        lines += ["", "## Notes", "", *ctx.notes]
    lines += ["", "## Final lines", "", "```", *[ctx.outcomes[t.name].final_line() for t in targets], "```", ""]
    return lines


def write_results(path: Path, ctx: RunContext, targets: tuple[Target, ...], info: RunInfo) -> None:
    lines = [*header(info), "", *summary_table(ctx, targets), *sections(ctx, targets), *closing(ctx, targets)]
    path.write_text("\n".join(lines), encoding="utf-8")
