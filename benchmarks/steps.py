"""Benchmarks 1-3, measured together: an MPT step against an HF PEFT step, the full step against its FLOP
count, and the training loop's FLOP rate against a matmul peak.

Each round runs one CE-only MPT step, one PEFT step on the same batch, one full MPT step on the same CE
batch (`Trainer.step` on the plans of the full trainer's training epochs, `Trainer.batch_plan`), and a
matmul peak, in alternating order: stepping the sides one step at a time gives far steadier ratios on a
shared machine than alternating whole epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.context import RunContext
from benchmarks.flops import MatmulPeak, plan_flops
from benchmarks.peft_baseline import PeftBaseline, warm_up
from benchmarks.timing import Rounds, alternating, load_text, ratios, spread, timed_cpu
from mpt.backbones import load_backbone
from mpt.config import LABELS, MPTConfig
from mpt.training import StepPlan, Trainer
from search_spaces import REFERENCE_POINTS, VANILLA

SIDES = ("ce", "peft", "full")


class StepCycle:
    """The full trainer's training epochs, one step at a time: each plan as `train_epoch` would draw it."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.pending: list[StepPlan] = []

    def next(self) -> StepPlan:
        if not self.pending:
            self.pending = self.trainer.batch_plan()
        return self.pending.pop(0)


@dataclass
class StepRecords:
    """Per round: each side's wall and CPU seconds, the matmul peak and the FLOPs of the CE and full steps."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    peak: list[float] = field(default_factory=list)
    flops_ce: list[float] = field(default_factory=list)
    flops_full: list[float] = field(default_factory=list)


@dataclass
class StepBench:
    """The three sides of the step benchmarks and the peak."""

    ce: Trainer
    full: Trainer
    peft: PeftBaseline
    peak: MatmulPeak
    cycle: StepCycle

    def one_round(self, index: int, records: StepRecords | None = None) -> None:
        plan = self.cycle.next()
        ce_plan = StepPlan(plan.number, plan.rows, [])
        sides = alternating(
            [
                ("ce", lambda: self.ce.step(ce_plan)),
                ("peft", lambda: self.peft.step_plan(self.ce, ce_plan)),
                ("full", lambda: self.full.step(plan)),
            ],
            index,
        )
        measured = {name: timed_cpu(fn) for name, fn in sides}
        if records is not None:
            for name, (wall, cpu) in measured.items():
                records.wall[name].append(wall)
                records.cpu[name].append(cpu)
            records.flops_ce.append(plan_flops(self.ce, [ce_plan], with_alignment=False))
            records.flops_full.append(plan_flops(self.full, [plan], with_alignment=True))


def build(args, data) -> StepBench:
    backbone = load_backbone("e5-small", num_layers=args.layers, want_mlm=False)
    # fp32, as the PEFT baseline and the matmul peak run (benchmark `precision` compares bf16 with it); the joint
    # template, the one sequence per pair that PEFT's prompt tuning reads
    common = dict(num_layers=args.layers, num_threads=args.threads, precision="fp32", pair_encoding="joint")
    ce = Trainer(MPTConfig(**REFERENCE_POINTS[VANILLA], **common), backbone=backbone, data=data)
    full = Trainer(MPTConfig(**common), backbone=backbone, data=data)
    if ce.train_ids != full.train_ids:
        raise RuntimeError("the CE-only and the full trainer drew different few-shot sets: their seeds differ")
    peft = PeftBaseline(ce)
    peak = MatmulPeak(args.matmul_n)
    for trainer in (ce, full):
        trainer.model.train()  # as train_epoch sets it
        warm_up(trainer, peft)
    return StepBench(ce, full, peft, peak, StepCycle(full))


def measure(args, bench: StepBench) -> StepRecords:
    """The untimed warm-up rounds, then the timed ones (a peak before even rounds' steps, after odd ones')."""
    for index in range(args.warm_up_rounds):
        bench.one_round(index)
    records = StepRecords()
    for index in Rounds(args.step_rounds[0], args.step_rounds[1], args.step_budget):
        peaks = [bench.peak.measure()] if index % 2 == 0 else []
        bench.one_round(index, records)
        if index % 2:
            peaks.append(bench.peak.measure())
        records.peak.append(max(peaks))
        if index % 5 == 4:
            print(
                f"[steps] round {index + 1}: CE-only {records.wall['ce'][-1]:.3f} s, PEFT "
                f"{records.wall['peft'][-1]:.3f} s, full {records.wall['full'][-1]:.3f} s; matmul peak "
                f"{max(peaks) / 1e9:.1f} GFLOP/s; load {load_text()}",
                flush=True,
            )
    return records


def run(ctx: RunContext) -> None:
    args = ctx.args
    print(f"[steps] e5-small, {args.layers} layers: loading", flush=True)
    bench = build(args, ctx.run_data())
    config = bench.ce.config
    batches = -(-len(bench.ce.train_ids) // config.batch_size)
    print(
        f"[steps] {batches} batches of {config.batch_size} (alignment batch "
        f"{bench.full.config.alignment_batch_size}), prompt {config.prompt_length}; warming up",
        flush=True,
    )
    records = measure(args, bench)
    setup = (
        f"e5-small cut to {args.layers} of 12 layers, {args.threads} thread(s); {len(records.peak)} rounds of "
        f"one training step per side, cycling through the {batches} batches of the default few-shot set "
        f"({config.shots_per_class} shots x {len(LABELS)} classes, batch {config.batch_size}, prompt length "
        f"{config.prompt_length}, dynamic padding as in training), the sides' order reversed every round, "
        f"after {args.warm_up_rounds} untimed rounds"
    )
    times = (
        f"- per-step seconds: MPT CE-only {spread(records.wall['ce'])}, PEFT {spread(records.wall['peft'])}, "
        f"MPT full {spread(records.wall['full'])}"
    )
    record_ce_vs_peft(ctx, records, bench, [setup, times])
    record_full_overhead(ctx, records, bench, [setup, times])
    record_flop_rate(ctx, records, bench, setup)
    ctx.flop_encoder_config = bench.full.model.encoder.config


def record_ce_vs_peft(ctx: RunContext, records: StepRecords, bench: StepBench, head: list[str]) -> None:
    config = bench.ce.config
    vanilla = ", ".join(f"{k}={v}" for k, v in REFERENCE_POINTS[VANILLA].items())
    wall = ratios(records.wall["ce"], records.wall["peft"])
    ctx.outcomes["ce_step_vs_peft"].record(
        wall,
        [
            *head,
            f"- MPT: `Trainer.step` with {vanilla} (the prompt position `{config.prompt_position}`); PEFT: "
            "`get_peft_model(encoder, PromptTuningConfig(task_type=FEATURE_EXTRACTION, num_virtual_tokens=L))` "
            f"(prompt before `<s>`), same {config.pooling}-pooling linear head, CE and AdamW over prompt + head, the "
            "encoder in eval mode (no dropout) on both sides",
            f"- ratio MPT / PEFT per round (wall time, the benchmark): {spread(wall)}; the same in process CPU time "
            f"(cross-check): {spread(ratios(records.cpu['ce'], records.cpu['peft']))}",
        ],
    )


def record_full_overhead(ctx: RunContext, records: StepRecords, bench: StepBench, head: list[str]) -> None:
    config = bench.full.config
    flop_ratio = ratios(records.flops_full, records.flops_ce)
    wall = ratios(records.wall["full"], records.wall["peft"])
    overhead = ratios(wall, flop_ratio)
    cpu_overhead = ratios(ratios(records.cpu["full"], records.cpu["peft"]), flop_ratio)
    same = "=" if config.alignment_batch_size == config.batch_size else "vs"
    teacher = "under no_grad" if config.teacher_stop_gradient else "with gradients"
    ctx.outcomes["full_step_overhead"].record(
        overhead,
        [
            *head,
            f"- full step: the default config (translator depth {config.translator_depth}, alignment weight "
            f"{config.alignment_weight}, alignment batch {config.alignment_batch_size} {same} CE batch "
            f"{config.batch_size}, teacher {teacher})",
            f"- measured time ratio full / PEFT: {spread(wall)}",
            f"- FLOP ratio full / PEFT from the actual padded batch shapes: {spread(flop_ratio)}",
            f"- measured / FLOP ratio per round (wall time, the benchmark): {spread(overhead)}; in process CPU "
            f"time (cross-check): {spread(cpu_overhead)}",
        ],
    )


def record_flop_rate(ctx: RunContext, records: StepRecords, bench: StepBench, setup: str) -> None:
    args, peak = ctx.args, records.peak
    rate = ratios(records.flops_full, records.wall["full"])
    efficiency = ratios(rate, peak)
    ce_efficiency = ratios(ratios(records.flops_ce, records.wall["ce"]), peak)
    peft_efficiency = ratios(ratios(records.flops_ce, records.wall["peft"]), peak)
    ctx.outcomes["train_flop_rate"].record(
        efficiency,
        [
            setup,
            f"- matmul peak ({args.matmul_n}x{args.matmul_n} fp32 torch.matmul, best of 3, every round): "
            f"{spread([p / 1e9 for p in peak])} GFLOP/s",
            f"- full MPT training loop: {spread([r / 1e9 for r in rate])} GFLOP/s, "
            f"{spread([f / 1e9 for f in records.flops_full])} GFLOP per step",
            f"- fraction of peak, full MPT loop (the benchmark): {spread(efficiency)}; CE-only MPT loop "
            f"{spread(ce_efficiency)}; PEFT loop {spread(peft_efficiency)}",
            f"- the full loop against the run's best peak ({max(peak) / 1e9:.1f} GFLOP/s) instead of its own "
            f"round's: {spread([r / max(peak) for r in rate])}",
            step_mix_line(bench),
        ],
    )


OPERATOR_KINDS = (
    ("matmul (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::bmm")),
    (
        "attention (sdpa fwd+bwd)",
        (
            "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        ),
    ),
    ("copies and fills", ("aten::copy_", "aten::fill_", "aten::zero_")),
    (
        "elementwise (add, mul, gelu, layer norm, ...)",
        (
            "aten::add",
            "aten::add_",
            "aten::mul",
            "aten::gelu",
            "aten::gelu_backward",
            "aten::native_layer_norm",
            "aten::native_layer_norm_backward",
            "aten::mul_",
            "aten::div",
            "aten::where",
            "aten::sum",
        ),
    ),
)


def step_mix_line(bench: StepBench, repeats: int = 3) -> str:
    """torch.profiler over `repeats` full steps: the share of CPU self time per kind of operator."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                bench.full.step(bench.cycle.next())
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        shares = {
            kind: sum(e.self_cpu_time_total for e in events if e.key in names) / total for kind, names in OPERATOR_KINDS
        }
    except Exception as err:  # the profiler is a diagnosis aid, never a reason to fail the run
        return f"- profiler breakdown unavailable: {err}"
    shares["everything else"] = max(0.0, 1.0 - sum(shares.values()))
    return (
        f"- where {'three' if repeats == 3 else repeats} full MPT steps' CPU time goes (torch.profiler, self "
        "time): " + ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items())
    )
