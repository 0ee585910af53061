"""The measurements that chose the defaults of issue 22 (docs/defaults.md): `Trainer` runs on the mini set's
train and dev (never its test), several seeds, each run in its own process with one torch thread.

    python -m benchmarks.defaults_sweep run --configs siamese-L4,probe-L4 --seeds 1,2,3 --jobs 2 --output runs.jsonl
    python -m benchmarks.defaults_sweep table runs.jsonl --epochs 5,10        # a markdown table of the runs
    python -m benchmarks.defaults_sweep list                                  # the named configurations

A named configuration is a few fields over BASE (vanilla prompt transfer on the study's four targets, 10
epochs, precision auto). Each run records its English and target-language dev accuracy per epoch (the targets
at the epochs English dev selects, as a study's search trial reads them), its seconds per epoch and its start-up
(imports, backbone and data), so the table can read any number of epochs up to the run's: the selected epoch
of the first E epochs is always one that selected when it was reached, so its target dev was read. Runs go
`--jobs` at a time under `nice -n 5`, as the study runs two trials at once on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = ["de", "zh", "ar", "sw"]
BASE: dict[str, Any] = {
    "num_layers": 4,
    "epochs": 10,
    "shots_per_class": 64,
    "batch_size": 16,
    "learning_rate": 1e-2,
    "target_languages": TARGETS,
    "translator_depth": 0,
    "alignment_weight": 0.0,
    "dev_all_languages": True,
    "precision": "auto",
    "num_threads": 1,
}
PROBE = {"prompt_length": 0}
PAPER = {"translator_depth": 1, "alignment_weight": 0.5}
# name -> fields over BASE; `_pool_prompt` (not a config field) pools the prompt positions too, in siamese mode
CONFIGS: dict[str, dict[str, Any]] = {
    "joint-L4": {"pair_encoding": "joint"},
    "joint-L4-paper": {"pair_encoding": "joint", **PAPER},
    **{f"siamese-L{n}": {"pair_encoding": "siamese", "num_layers": n} for n in (4, 8, 12)},
    **{f"probe-L{n}": {"pair_encoding": "siamese", "num_layers": n, **PROBE} for n in (4, 8, 12)},
    "siamese-L4-poolprompt": {"pair_encoding": "siamese", "_pool_prompt": True},
}
for _layers in (4, 8, 12):
    _base = {"pair_encoding": "siamese", "num_layers": _layers}
    CONFIGS.update(
        {
            f"siamese-L{_layers}-paper": {**_base, **PAPER},
            f"siamese-L{_layers}-lr3e-3": {**_base, "learning_rate": 3e-3},
            f"siamese-L{_layers}-lr3e-2": {**_base, "learning_rate": 3e-2},
            f"siamese-L{_layers}-K32": {**_base, "shots_per_class": 32},
            f"siamese-L{_layers}-K128": {**_base, "shots_per_class": 128},
            f"siamese-L{_layers}-len4": {**_base, "prompt_length": 4},
            f"siamese-L{_layers}-len32": {**_base, "prompt_length": 32},
            f"siamese-L{_layers}-normal": {**_base, "prompt_init": "normal"},
            f"probe-L{_layers}-lr3e-2": {**_base, **PROBE, "learning_rate": 3e-2},
            f"probe-L{_layers}-lr1e-1": {**_base, **PROBE, "learning_rate": 1e-1},
            f"probe-L{_layers}-K128": {**_base, **PROBE, "shots_per_class": 128},
        }
    )
# the second round, at the layer count the first chose, over 6 epochs (what the study's budget allows at most)
for _name in [n for n in CONFIGS if n.startswith(("siamese-L8-", "probe-L8-"))]:
    CONFIGS[f"{_name}-6ep"] = {**CONFIGS[_name], "epochs": 6}
CONFIGS.update(
    {
        "siamese-L6-6ep": {"pair_encoding": "siamese", "num_layers": 6, "epochs": 6},
        "probe-L6-6ep": {"pair_encoding": "siamese", "num_layers": 6, **PROBE, "epochs": 6},
        "siamese-L4-paper-6ep": {**CONFIGS["siamese-L4-paper"], "epochs": 6},
    }
)
# the third round: the second's better learning rate and prompt length together, per layer count, and the paper's
# point on them (the alignment task's cost)
for _layers in (4, 6, 8):
    _fast = {"pair_encoding": "siamese", "num_layers": _layers, "learning_rate": 3e-2, "prompt_length": 4, "epochs": 6}
    CONFIGS[f"siamese-L{_layers}-lr3e-2-len4-6ep"] = _fast
    CONFIGS[f"siamese-L{_layers}-lr3e-2-len4-paper-6ep"] = {**_fast, **PAPER}
    CONFIGS[f"probe-L{_layers}-lr3e-2-6ep"] = {**_fast, **PROBE}


def one_run(name: str, seed: int) -> dict[str, Any]:
    """Train one named configuration with `seed` to its last epoch (dev only); what the table needs."""
    started, cpu_started = time.perf_counter(), time.process_time()
    from mpt.config import MPTConfig
    from mpt.training import Trainer

    fields = dict(CONFIGS[name])
    pool_prompt = fields.pop("_pool_prompt", False)
    trainer = Trainer(MPTConfig.from_dict({**BASE, **fields, "seed": seed}))
    trainer.model.pool_prompt_positions = pool_prompt or trainer.model.pool_prompt_positions
    startup, startup_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    epochs = []
    while not trainer.done:
        cpu = time.process_time()
        record = trainer.train_epoch()
        epochs.append(
            {
                "epoch": record.epoch,
                "seconds": record.seconds,
                "cpu_s": time.process_time() - cpu,
                "loss": record.loss,
                "dev": record.dev_accuracy,
            }
        )
    return {
        "name": name,
        "seed": seed,
        "config": trainer.config.to_dict(),
        "pool_prompt": pool_prompt,
        "startup_s": startup,
        "startup_cpu_s": startup_cpu,
        "epochs": epochs,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "load": os.getloadavg(),
    }


def run_all(names: list[str], seeds: list[int], jobs: int, output: Path) -> None:
    """Every (name, seed) in its own process, `jobs` at a time, each result appended to `output` as it ends."""
    queue = [(name, seed) for name in names for seed in seeds]
    running: list[tuple[subprocess.Popen, str, int]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    while queue or running:
        while queue and len(running) < jobs:
            name, seed = queue.pop(0)
            command = ["nice", "-n", "5", sys.executable, "-m", "benchmarks.defaults_sweep", "one", name, str(seed)]
            running.append(
                (
                    subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
                    name,
                    seed,
                )
            )
        time.sleep(1)
        for entry in [r for r in running if r[0].poll() is not None]:
            running.remove(entry)
            process, name, seed = entry
            out, err = process.communicate()
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if process.returncode or not lines:
                print(f"{name} seed {seed} failed ({process.returncode}):\n{err[-2000:]}", file=sys.stderr)
                continue
            with output.open("a", encoding="utf-8") as sink:
                sink.write(lines[-1] + "\n")
            result = json.loads(lines[-1])
            print(f"{name} seed {seed}: {summary_of(result, len(result['epochs']))}", flush=True)


def selected(result: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The epoch English dev selects among the first `epochs` (ties keep the earlier), its dev accuracies and
    the run's wall seconds to that point (start-up included)."""
    source = result["config"]["source_language"]
    history = [e for e in result["epochs"] if e["epoch"] <= epochs and source in e["dev"]]
    best = history[0]
    for record in history[1:]:
        if record["dev"][source] > best["dev"][source]:
            best = record
    targets = [lang for lang in result["config"]["target_languages"]]
    wall = result["startup_s"] + sum(e["seconds"] for e in result["epochs"] if e["epoch"] <= epochs)
    cpu = result["startup_cpu_s"] + sum(e["cpu_s"] for e in result["epochs"] if e["epoch"] <= epochs)
    return {
        "epoch": best["epoch"],
        "en": best["dev"][source],
        "targets": statistics.mean(best["dev"][lang] for lang in targets),
        "wall_s": wall,
        "cpu_s": cpu,
    }


def summary_of(result: dict[str, Any], epochs: int) -> str:
    chosen = selected(result, epochs)
    return (
        f"{epochs} epochs: en {100 * chosen['en']:.1f}, targets {100 * chosen['targets']:.1f} (epoch "
        f"{chosen['epoch']}), {chosen['wall_s']:.0f} s"
    )


def table(results: list[dict[str, Any]], epoch_counts: list[int]) -> str:
    """Markdown rows: config, epochs, seeds, English dev per seed and mean, target dev mean, wall and CPU seconds
    per run (the least and the most over seeds; CPU time is the work done, whatever else ran on the machine)."""
    lines = [
        "| config | epochs | seeds | English dev per seed | English dev | target dev (de, zh, ar, sw) | "
        "wall per run (s) | CPU per run (s) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    names = list(dict.fromkeys(r["name"] for r in results))
    for name in names:
        runs = sorted((r for r in results if r["name"] == name), key=lambda r: r["seed"])
        for epochs in epoch_counts:
            if any(len(r["epochs"]) < epochs for r in runs):
                continue
            chosen = [selected(r, epochs) for r in runs]
            walls, cpus = [c["wall_s"] for c in chosen], [c["cpu_s"] for c in chosen]
            per_seed = " / ".join(f"{100 * c['en']:.1f}" for c in chosen)
            lines.append(
                f"| {name} | {epochs} | {', '.join(str(r['seed']) for r in runs)} | {per_seed} | "
                f"{100 * statistics.mean(c['en'] for c in chosen):.1f} | "
                f"{100 * statistics.mean(c['targets'] for c in chosen):.1f} | "
                f"{min(walls):.0f}-{max(walls):.0f} | {min(cpus):.0f}-{max(cpus):.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults_sweep", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run named configurations over seeds")
    run.add_argument("--configs", required=True, help="comma-separated names (see `list`)")
    run.add_argument("--seeds", default="1,2,3")
    run.add_argument("--jobs", type=int, default=2)
    run.add_argument("--output", type=Path, required=True, help="JSON lines, appended")
    one = commands.add_parser("one", help="one run, its result as a JSON line (what `run` starts)")
    one.add_argument("name")
    one.add_argument("seed", type=int)
    show = commands.add_parser("table", help="a markdown table of recorded runs")
    show.add_argument("input", type=Path)
    show.add_argument("--epochs", default="5,10", help="comma-separated epoch counts to read the runs at")
    commands.add_parser("list", help="the named configurations")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(f"{name}: {fields}" for name, fields in CONFIGS.items()))
    elif args.command == "one":
        print(json.dumps(one_run(args.name, args.seed)), flush=True)
    elif args.command == "table":
        results = [json.loads(line) for line in args.input.read_text(encoding="utf-8").splitlines() if line.strip()]
        print(table(results, [int(e) for e in args.epochs.split(",")]))
    else:
        unknown = [n for n in args.configs.split(",") if n not in CONFIGS]
        if unknown:
            print(f"error: unknown configuration(s) {unknown}: see `list`", file=sys.stderr)
            return 2
        run_all(args.configs.split(","), [int(s) for s in args.seeds.split(",")], args.jobs, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
