"""Benchmarks of mpt-study (issue 7): MPT's cost against HF PEFT, the hardware, start-up, Ray and the study.

    python -m benchmarks.run            # the full run: about 13 minutes on 2 CPU cores (20 with --study)
    python -m benchmarks.run --quick    # a fast pass (2-layer backbone, fewest repeats): every code path
    python -m benchmarks.run --study    # also time the default study (item 7) and run 2 trials instead of 1
                                        # for the Ray overhead (item 5): the study's time and ~5 minutes more

Run from the repository root with the project installed (`pip install -e ".[dev]"`: peft is a dev extra).
It writes `benchmarks/RESULTS.md` (machine, command, date, medians and min-max, one line per benchmark)
and ends its output with one line per benchmark: `<name> <measured> <target> met|missed`.

Every comparison is a ratio of two sides measured side by side in the same run, interleaved (A B, then
B A, ...) and repeated; a ratio is formed per round and the median and min-max are over rounds. Absolute
times on a shared machine are noise; ratios of neighbouring measurements much less so. Everything runs on
one torch thread by default (`--threads`): that is what each trial of the default study gets
(`--cpus-per-trial 1`), and on a busy 2-core machine two OpenMP threads mostly wait for each other.

The package: `registry` lists the targets and the parts that measure them (`--only` picks parts), one module
per part (`steps`, `eval_padding`, `startup`, `trials`, `study_wall`, `gpu`), `timing` and `flops` hold the
shared measuring, `report` writes RESULTS.md, `cli` is what `python -m benchmarks.run` runs. `load_probe` and
`trials_probe` are the programs that run in fresh interpreters (`python -m benchmarks.<name>`).

Where CUDA is available it also records XLM-R-base training step times in fp32 and bf16 (no target):
    python -m benchmarks.run --only gpu  # on a GPU machine: a few minutes
"""
