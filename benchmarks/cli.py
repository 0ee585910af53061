"""`python -m benchmarks.run`: the options, the parts selected with --only in the registry's order, RESULTS.md
and the final lines. A part that fails is recorded (Notes, its targets) and makes the exit status 1."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import benchmarks
from benchmarks.context import NOT_SELECTED, STUDY_UNAVAILABLE, Outcome, RunContext
from benchmarks.flops import MATMUL_N, QUICK_MATMUL_N
from benchmarks.machine import machine_info
from benchmarks.registry import Part, Target, parts, targets
from benchmarks.report import RunInfo, write_results
from benchmarks.timing import load_text

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
NEEDS_STUDY = ("trials", "study")  # the parts that run `study/run.py` or the study's trainable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=(benchmarks.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a fast pass: 2-layer backbone, fewest repeats")
    parser.add_argument(
        "--study", action="store_true", help="also run the default study (item 7) and use Ray on more trials (item 5)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset: " + ", ".join(f"{part.name} ({part.what})" for part in parts()),
    )
    parser.add_argument("--layers", type=int, help="e5-small layers for the step benchmarks (default 12; quick 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every side and the matmul peak (default: 1, what each trial of the "
        "default study gets with --cpus-per-trial 1; on a shared machine two OpenMP threads "
        "stall on each other's barriers)",
    )
    parser.add_argument(
        "--gpu-device",
        default="cuda",
        help="device for the XLM-R-base step times in fp32 and bf16 (run where CUDA is available, "
        "else recorded as skipped; 'cpu' runs the same code in fp32, for tests)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help=f"default: {RESULTS_FILE}")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, and the sizes of every part that follow from --quick and --study."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quick = args.quick
    args.layers = args.layers or (2 if quick else 12)
    args.eval_layers = 1
    args.dedup_layers = 2 if quick else 4  # 4: the default study's
    args.eval_languages = 3 if quick else 99
    args.eval_rows = 150 if quick else None  # test rows per language (None: all; the mini set has 450)
    args.eval_train_epochs = 1
    args.matmul_n = QUICK_MATMUL_N if quick else MATMUL_N
    args.step_rounds, args.step_budget = ((4, 4), 0.0) if quick else ((12, 40), 100.0)
    args.warm_up_rounds = 2 if quick else 4
    args.eval_rounds, args.eval_budget = ((1, 1), 0.0) if quick else ((2, 3), 50.0)
    args.conversion_rounds = 1 if quick else 3
    args.gpu_rounds = 2 if quick else 20
    args.trials = 2 if quick or args.study else 1
    args.trial_rounds = 1
    args.smoke_rounds = 1
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sorted(args.only - {part.name for part in parts()})
    if unknown:
        parser.error(
            f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(part.name for part in parts())}"
        )
    return args


def run_part(ctx: RunContext, part: Part, names: list[str]) -> bool:
    """Run one part; on an exception record it (Notes, its targets' results) and return False."""
    try:
        part.run(ctx)
    except Exception as err:  # one failed part must not lose the others' results; the exit status says it
        ctx.notes.append(f"- {part.name} failed: {type(err).__name__}: {str(err)[:1500]}")
        if not names:  # the part without targets, the GPU record, says so in its section
            ctx.gpu_lines = [f"failed: {type(err).__name__}: {str(err)[:1500]}"]
        for name in names:
            if not ctx.outcomes[name].values:
                ctx.outcomes[name].skipped = f"skipped: failed ({type(err).__name__}, see Notes)"
        return False
    return True


def check_study(ctx: RunContext, wanted: list[Part], all_targets: tuple[Target, ...]) -> None:
    """Where a selected part needs the study and `study/run.py --help` fails, its targets are skipped (the
    trials part still times the plain side)."""
    from benchmarks.study_config import study_available

    if not any(part.name in NEEDS_STUDY for part in wanted):
        return
    ctx.study_reason = study_available()
    if ctx.study_reason:
        ctx.notes.append(f"- items 5 and 7 were skipped: `python study/run.py --help` failed ({ctx.study_reason})")
        for target in all_targets:
            if target.part == "study" or target.name == "ray_overhead":
                ctx.outcomes[target.name].skipped = STUDY_UNAVAILABLE


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    started, load_start = time.perf_counter(), load_text()
    command = "python -m benchmarks.run" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    machine = machine_info(args.threads)
    print(f"mpt-study benchmarks: {machine['cpu']}; {args.threads} threads; load {load_start}", flush=True)
    all_targets = targets()
    ctx = RunContext(args, {t.name: Outcome(t.name, t.item, t.target) for t in all_targets})
    wanted = [part for part in parts() if not args.only or part.name in args.only]
    check_study(ctx, wanted, all_targets)
    failed = [
        part.name for part in wanted if not run_part(ctx, part, [t.name for t in all_targets if t.part == part.name])
    ]
    for outcome in ctx.outcomes.values():
        if not outcome.values and not outcome.skipped:
            outcome.skipped = NOT_SELECTED
    wall = time.perf_counter() - started
    write_results(args.output, ctx, all_targets, RunInfo(command, started_at, wall, machine, (load_start, load_text())))
    print(f"\nwrote {args.output} ({wall / 60:.1f} min)")
    for target in all_targets:
        print(ctx.outcomes[target.name].final_line())
    if failed:
        print(f"error: {', '.join(failed)} failed (see Notes in {args.output})", file=sys.stderr)
    return 1 if failed else 0
