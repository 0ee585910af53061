"""The benchmark script (docs/benchmarks.md): its output format (final lines, RESULTS.md) with stand-in parts, a
--quick pass of items 4, 8 and 9 and the GPU step-time record's code on the CPU end to end; the max-length
padding baseline of item 4 gives the same accuracy. Item 6's side conditions (one conversion, then cache hits;
the direct tokenizer load gives AutoTokenizer's ids) are tests of their own in tests/test_mpt_backbones.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.eval_padding import max_length_accuracy
from benchmarks.registry import Part, targets
from mpt.config import MPTConfig
from mpt.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAMES = [
    "ce_step_vs_peft",
    "full_step_overhead",
    "train_flop_rate",
    "eval_dynamic_padding",
    "ray_overhead",
    "startup_load_share",
    "conversion_vs_load",
    "eval_share",
    "bf16_vs_fp32",
    "pair_dedup_eval",
    "pair_dedup_alignment",
    "study_smoke_min",
    "study_default_min",
]


def test_registry_lists_every_target_once_in_report_order():
    assert [target.name for target in targets()] == NAMES


def test_dynamic_padding_gives_the_same_accuracy_as_max_length_padding(nli_dir, tiny_backbone):
    config = MPTConfig(
        backbone="tiny-xlmr",
        data=str(nli_dir),
        parallel=str(nli_dir),
        target_languages=["de"],
        prompt_length=4,
        shots_per_class=3,
        batch_size=4,
        alignment_batch_size=2,
        epochs=3,
        learning_rate=0.05,
        dev_all_languages=True,
        max_length=48,
    )
    trainer = Trainer(config, backbone=tiny_backbone)
    examples = trainer.data.test["de"]
    assert trainer.accuracy(examples, "de") == max_length_accuracy(trainer, examples, "de")


def test_final_lines_and_results_follow_the_registry_whatever_the_parts_measure(tmp_path, monkeypatch, capsys):
    """The run's output with stand-in parts (no measuring): one final line per target in the registry's order
    (value, target, met or missed; or why it was skipped), RESULTS.md's table, sections, reasons for misses and
    notes, and exit status 1 when a part fails, without losing the other parts' results."""
    import benchmarks.cli as cli

    def gpu(ctx):
        ctx.gpu_lines = ["| fp32 | 16 | 1.0 |"]

    def broken(ctx):
        raise RuntimeError("the probe died")

    stand_ins = (
        Part("eval", "4", lambda ctx: ctx.outcomes["eval_dynamic_padding"].record([2.0, 3.0, 2.5], ["- ok"])),
        Part("startup", "6", broken),
        Part("precision", "9", lambda ctx: ctx.outcomes["bf16_vs_fp32"].record([0.9], ["- slow"])),
        Part("gpu", "gpu", gpu),
    )
    monkeypatch.setattr(cli, "parts", lambda: stand_ins)
    output = tmp_path / "RESULTS.md"
    assert cli.main(["--quick", "--only", "eval,startup,precision,gpu", "--output", str(output)]) == 1
    final = capsys.readouterr().out.strip().splitlines()[-len(NAMES) :]
    assert [line.split()[0] for line in final] == NAMES
    measured = dict(zip(NAMES, final))
    assert measured["eval_dynamic_padding"] == "eval_dynamic_padding 2.500 >=1.5 met"
    assert measured["bf16_vs_fp32"] == "bf16_vs_fp32 0.900 <=0.8 missed"
    assert measured["conversion_vs_load"] == "conversion_vs_load - >=10 skipped: failed (RuntimeError, see Notes)"
    assert measured["ray_overhead"] == "ray_overhead - <=1.15 skipped: not selected (--only)"
    report = output.read_text(encoding="utf-8")
    assert report.startswith("# Benchmarks (issue 7)") and "**--quick run**" in report
    assert "| 4 | `eval_dynamic_padding` |" in report and "| 2.5 [2-3] (n=3) | >=1.5 | met |" in report
    assert "## 4. `eval_dynamic_padding` (>=1.5)\n\n- ok" in report and "| fp32 | 16 | 1.0 |" in report
    assert "## Missed targets: why\n\n- `bf16_vs_fp32`: this CPU computes bf16" in report
    assert "- startup failed: RuntimeError: the probe died" in report
    assert report.rstrip().endswith("\n".join(["## Final lines", "", "```", *final, "```"]))


@pytest.mark.slow
def test_quick_benchmark_writes_results_and_final_lines(tmp_path):
    output = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "eval,eval_share,precision,gpu",
            "--gpu-device",
            "cpu",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = done.stdout.strip().splitlines()[-len(NAMES) :]
    assert [line.split()[0] for line in final] == NAMES
    measured = {line.split()[0]: line for line in final}
    for name in ("eval_dynamic_padding", "eval_share", "bf16_vs_fp32"):
        assert re.fullmatch(rf"{name} \d+\.\d{{3}} [<>]=[\d.]+ (met|missed)", measured[name]), measured[name]
    assert measured["conversion_vs_load"].endswith("skipped: not selected (--only)")
    report = output.read_text(encoding="utf-8")
    # the side condition behind the padding ratio: the same accuracy
    assert "accuracy identical in every pass and language: yes" in report
    assert re.search(r"- before \(every dev language every epoch, then test\): evaluation share [\d.]+", report)
    assert re.search(r"- training epoch, s: fp32 [\d.]+ .*; bf16 / fp32 [\d.]+", report)
    assert report.rstrip().endswith("```") and all(line in report for line in final)
    # the GPU record's code path, on the CPU in fp32 only: a step time per batch size
    gpu = report.split("## GPU: XLM-R-base training step, fp32 and bf16")[1].split("\n## ")[0]
    for batch in (MPTConfig().batch_size, 32):
        assert re.search(
            rf"^\| fp32 \| {batch} \| [\d.]+ \[[\d.]+-[\d.]+\] \(n=2\) \| [\d.]+ \[.*\| [\d.]+ \| - \|$", gpu, re.M
        ), gpu
    assert "bf16 |" not in gpu
