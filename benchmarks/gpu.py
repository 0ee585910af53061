"""XLM-R-base training step times in fp32 and bf16, recorded where CUDA is available (no target).

XLM-R-base's shape with random weights (seed 0) and the real tokenizer, since step time depends on the shapes
alone and the GPU machines have no hub access; CE-only and full MPT steps at batch 8 (the default) and 32,
all alternating round by round, each synchronised with the device.
"""

from __future__ import annotations

import platform
import time

import torch

from benchmarks.context import RunContext
from benchmarks.timing import alternating, med, spread
from mpt.backbones import TINY_XLMR_SHAPE, Backbone, frozen_backbone, load_backbone, xlmr_masked_lm_config
from mpt.config import MPTConfig
from mpt.training import StepPlan, Trainer
from search_spaces import REFERENCE_POINTS, VANILLA

XLMR_BASE_SHAPE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
BATCH_SIZES = (MPTConfig().batch_size, 32)  # the default batch, and one that fills more of a large GPU
KINDS = (("CE-only", REFERENCE_POINTS[VANILLA]), ("full", {}))  # the full step: the default config
NO_CUDA = [
    "skipped: no CUDA device here (`torch.cuda.is_available()` is False); run `python -m benchmarks.run "
    "--only gpu` on a GPU machine to record it"
]


def xlmr_shaped_backbone(shape: dict[str, int]) -> Backbone:
    """A randomly initialised (seed 0) XLM-R masked LM of this shape, with the real XLM-R tokenizer: a step's
    time depends on the shapes alone, and the GPU machines cannot reach the hub for trained weights."""
    from transformers import XLMRobertaForMaskedLM

    torch.manual_seed(0)
    return frozen_backbone(
        "xlm-roberta-base (random init)",
        XLMRobertaForMaskedLM(xlmr_masked_lm_config(**shape)),
        load_backbone("tiny-xlmr").tokenizer,
    )


def build_trainers(device: torch.device, precisions: tuple[str, ...], backbone: Backbone) -> dict[tuple, Trainer]:
    """(precision, batch, kind) -> a trainer of the XLM-R shape with the MLM verbalizer."""
    from mpt.training import load_run_data

    data = load_run_data(MPTConfig())
    trainers = {}
    for precision in precisions:
        for batch in BATCH_SIZES:
            for kind, overrides in KINDS:
                config = MPTConfig(
                    backbone="xlm-roberta-base",
                    head="mlm",
                    device=str(device),
                    precision=precision,
                    batch_size=batch,
                    alignment_batch_size=batch,
                    **overrides,
                )
                trainer = Trainer(config, backbone=backbone, data=data)
                trainer.model.train()  # as train_epoch sets it
                trainers[(precision, batch, kind)] = trainer
    return trainers


def step_seconds(trainer: Trainer, on_cuda: bool) -> float:
    """One optimizer step on the first rows of the few-shot set (and fresh alignment pairs), synchronised."""
    plan = StepPlan(1, list(range(trainer.config.batch_size)), trainer.batch_plan()[0].pair_rows)
    if on_cuda:
        torch.cuda.synchronize(trainer.device)
    started = time.perf_counter()
    trainer.step(plan)
    if on_cuda:
        torch.cuda.synchronize(trainer.device)
    return time.perf_counter() - started


def measure(args, trainers: dict[tuple, Trainer], on_cuda: bool) -> tuple[dict[tuple, list[float]], dict]:
    """Warm-up rounds, then `args.gpu_rounds` alternating rounds: step seconds and peak GiB per trainer."""
    order = list(trainers)
    for _ in range(args.warm_up_rounds):
        for key in order:
            step_seconds(trainers[key], on_cuda)
    times: dict[tuple, list[float]] = {key: [] for key in order}
    peaks: dict[tuple, float] = {}
    for index in range(args.gpu_rounds):
        for key in alternating(order, index):
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(trainers[key].device)
            times[key].append(step_seconds(trainers[key], on_cuda))
            if on_cuda:
                peaks[key] = torch.cuda.max_memory_allocated(trainers[key].device) / 2**30
    return times, peaks


def table(precisions, times: dict[tuple, list[float]], peaks: dict) -> list[str]:
    lines = [
        "| precision | batch | CE-only step, ms | full step (CE + alignment), ms | full / CE-only | peak memory, GiB |",
        "|---|---|---|---|---|---|",
    ]
    for precision in precisions:
        for batch in BATCH_SIZES:
            ce, full = times[(precision, batch, "CE-only")], times[(precision, batch, "full")]
            peak = peaks.get((precision, batch, "full"))
            lines.append(
                f"| {precision} | {batch} | {spread([t * 1e3 for t in ce])} | "
                f"{spread([t * 1e3 for t in full])} | {med(full) / med(ce):.2f} | "
                f"{f'{peak:.2f}' if peak is not None else '-'} |"
            )
    if "bf16" in precisions:
        speedups = [
            f"batch {batch} {kind} {med(times[('fp32', batch, kind)]) / med(times[('bf16', batch, kind)]):.2f}x"
            for batch in BATCH_SIZES
            for kind, _ in KINDS
        ]
        lines += ["", f"- bf16 speed-up over fp32 (median step times): {', '.join(speedups)}"]
    return lines


def setup_line(args, device_name: str, shape: dict[str, int], config: MPTConfig) -> str:
    what = "XLM-R-base" if shape is XLMR_BASE_SHAPE else "a tiny XLM-R (--quick)"
    vocabulary = xlmr_masked_lm_config(**shape).vocab_size // 1000
    return (
        f"{device_name}; {what}'s shape ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
        f"FFN {shape['intermediate_size']}, {vocabulary}k vocabulary, MLM head; random init, seed 0) with the "
        f"real tokenizer, the mini set, prompt {config.prompt_length}, max length {config.max_length}, dynamic "
        f"padding; one optimizer step per timing, {args.gpu_rounds} alternating rounds after "
        f"{args.warm_up_rounds} warm-up rounds, synchronised with the device"
    )


def step_time_lines(args) -> list[str]:
    """The GPU section of RESULTS.md: XLM-R step times per precision, batch size and kind of step."""
    device = torch.device(args.gpu_device)
    on_cuda = device.type == "cuda"
    # off CUDA (the tests' run of this code path) fp32 only: benchmark `precision` measures bf16 on CPU
    precisions = ("fp32", "bf16") if on_cuda else ("fp32",)
    shape = TINY_XLMR_SHAPE if args.quick else XLMR_BASE_SHAPE
    print(f"[gpu] {device}: XLM-R {shape} random init, {', '.join(precisions)}, batches {BATCH_SIZES}", flush=True)
    trainers = build_trainers(device, precisions, xlmr_shaped_backbone(shape))
    times, peaks = measure(args, trainers, on_cuda)
    name = torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "CPU"
    config = next(iter(trainers.values())).config  # prompt and max length: the same in every trainer
    for key, values in times.items():
        print(f"[gpu] {key}: {med(values) * 1e3:.1f} ms", flush=True)
    return [setup_line(args, name, shape, config), "", *table(precisions, times, peaks)]


def run(ctx: RunContext) -> None:
    if torch.device(ctx.args.gpu_device).type == "cuda" and not torch.cuda.is_available():
        ctx.gpu_lines = list(NO_CUDA)
        return
    ctx.gpu_lines = step_time_lines(ctx.args)
