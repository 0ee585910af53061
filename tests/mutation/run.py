"""The mutation check: plant each bug of `tests/mutation/mutants.py`, one at a time, in a copy of the working
tree, run the fast tier there, and say which the tests caught. Not part of CI's default run.

    python -m tests.mutation.run                          # every fast mutant; exit 1 if any survives
    python -m tests.mutation.run --slow                   # and the slow ones (end-to-end studies: minutes each)
    python -m tests.mutation.run --only loss_sign,kl_no_t_squared
    python -m tests.mutation.run --list

The copy holds the files git tracks or would track (committed or not; ignored files left out). The unmutated
copy must pass the fast tier first (and the slow mutants' files, when there are any), so that a failure means the
mutant was noticed. A mutant whose old text is
no longer in its file is an error (exit 2), never a pass. Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mutation.mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
FAST_TIER = ["-m", "not slow", "-x", "-q", "-p", "no:cacheprovider"]
SLOW_FILES = ["-x", "-q", "-p", "no:cacheprovider"]  # a slow mutant's files, slow tests included


@dataclass
class Outcome:
    mutant: str
    verdict: str  # caught, MISSED, timeout, error
    seconds: float
    detail: str = ""


def stale(mutants: list[Mutant], root: Path) -> list[str]:
    """Why each mutant that no longer applies to the tree at `root` cannot run."""
    problems = []
    for mutant in mutants:
        path = root / mutant.file
        count = path.read_text(encoding="utf-8").count(mutant.old) if path.is_file() else -1
        if count != 1:
            found = "the file does not exist" if count < 0 else f"its old text occurs {count} times"
            problems.append(
                f"mutant '{mutant.name}' no longer applies to {mutant.file}: {found} (must be once); "
                f"rewrite it in tests/mutation/mutants.py against the file's current text"
            )
        elif mutant.new == mutant.old:
            problems.append(f"mutant '{mutant.name}' changes nothing: its new text is its old text")
    return problems


def copy_tree(root: Path) -> Path:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    copy = Path(tempfile.mkdtemp(prefix="mpt-mutation-"))
    for name in filter(None, listed):
        source = root / name
        if source.is_file():  # a tracked file deleted in the working tree is left out, as the tree has it
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def test_files(copy: Path, first: tuple[str, ...]) -> list[str]:
    """Every test file of the fast tier, the mutant's own first (pytest runs files in the order given)."""
    every = sorted(str(p.relative_to(copy)) for p in (copy / "tests").rglob("test_*.py"))
    missing = [name for name in first if name not in every]
    if missing:
        raise SystemExit(f"error: a mutant names test files that do not exist: {missing}")
    return [*first, *[name for name in every if name not in first]]


def run_fast_tier(
    copy: Path, files: list[str], env: dict, timeout: float, options: list[str] = FAST_TIER
) -> tuple[int | None, str, float]:
    """pytest's exit status (None on timeout), its output and the wall time. On a timeout the whole process
    group that pytest started is ended (trial processes included)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *options, *files],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    return code, output, time.perf_counter() - started


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return match.group(1) if match else output.strip().splitlines()[-1] if output.strip() else ""


def try_mutant(mutant: Mutant, copy: Path, env: dict, timeout: float) -> Outcome:
    path = copy / mutant.file
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(mutant.old, mutant.new, 1), encoding="utf-8")
    try:
        if mutant.slow:
            code, output, seconds = run_fast_tier(copy, list(mutant.first), env, timeout, SLOW_FILES)
        else:
            code, output, seconds = run_fast_tier(copy, test_files(copy, mutant.first), env, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    if code is None:
        return Outcome(mutant.name, "timeout", seconds, f"no verdict within {timeout:.0f} s")
    if code == 0:
        return Outcome(mutant.name, "MISSED", seconds, "the fast tier passed")
    if code in (1, 2) and re.search(r"^(FAILED|ERROR) ", output, re.M):  # 2: an error while collecting
        return Outcome(mutant.name, "caught", seconds, first_failure(output))
    return Outcome(mutant.name, "error", seconds, f"pytest exit {code}: {output.strip()[-400:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run of the fast tier (900)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the run of the unmutated copy (only when it was just seen to pass)",
    )
    parser.add_argument(
        "--slow",
        action="store_true",
        help="also the slow mutants (their test files run end-to-end studies: minutes each)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - {m.name for m in MUTANTS})
    if unknown:
        parser.error(f"--only: unknown mutant(s) {unknown}; --list shows them")
    mutants = [m for m in MUTANTS if m.name in names or not names and (args.slow or not m.slow)]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:40} {mutant.file:22} {'(slow) ' if mutant.slow else ''}{mutant.why}")
        return 0
    problems = stale(mutants, ROOT)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    started = time.perf_counter()
    copy = copy_tree(ROOT)
    try:
        # the copy's modules, in pytest and in every process it starts (CLI runs, Ray trials)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
        where = subprocess.run(
            [sys.executable, "-c", "import mpt, study; print(mpt.__file__, study.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        if where.returncode != 0 or any(not Path(p).is_relative_to(copy) for p in where.stdout.split()):
            print(
                f"error: the copy's modules do not import from the copy ({where.stdout or where.stderr})",
                file=sys.stderr,
            )
            return 2
        slow_files = sorted({name for m in mutants if m.slow for name in m.first})
        if not args.no_baseline:
            baselines = [("fast tier", test_files(copy, ()), FAST_TIER)] if not all(m.slow for m in mutants) else []
            if slow_files:
                baselines.append((f"slow mutants' files ({', '.join(slow_files)})", slow_files, SLOW_FILES))
            for what, files, options in baselines:
                code, output, seconds = run_fast_tier(copy, files, env, args.timeout, options)
                if code != 0:
                    print(
                        f"error: the {what} fail(s) without any mutant ({first_failure(output)}); fix that first",
                        file=sys.stderr,
                    )
                    return 2
                print(f"unmutated copy: {what} passed in {seconds:.0f} s", flush=True)
        outcomes = []
        for mutant in mutants:
            outcome = try_mutant(mutant, copy, env, args.timeout)
            outcomes.append(outcome)
            print(f"{outcome.mutant:40} {outcome.verdict:8} {outcome.seconds:6.0f} s  {outcome.detail}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    caught = sum(o.verdict == "caught" for o in outcomes)
    print(f"{caught}/{len(outcomes)} mutants caught; {(time.perf_counter() - started) / 60:.1f} min")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
