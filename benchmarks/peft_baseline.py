"""The baseline of benchmarks 1-3: HF PEFT prompt tuning of the same frozen encoder, with MPT's head."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mpt.losses import classification_loss
from mpt.model import LinearHead
from mpt.training import StepPlan, Trainer


class PeftBaseline:
    """HF PEFT prompt tuning on a copy of the same frozen encoder, with MPT's linear head, CE and AdamW."""

    def __init__(self, trainer: Trainer) -> None:
        from peft import PromptTuningConfig, TaskType, get_peft_model

        config = trainer.config
        self.length = config.prompt_length
        torch.manual_seed(config.seed)
        self.model = get_peft_model(
            copy.deepcopy(trainer.model.encoder),
            PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=self.length),
        )
        self.model.eval()  # frozen backbone without dropout, as MPT runs it; gradients still flow to the prompt
        self.head = LinearHead(trainer.backbone.hidden_size, config.pooling)
        prompt_parameters = [p for p in self.model.parameters() if p.requires_grad]
        if sum(p.numel() for p in prompt_parameters) != self.length * trainer.backbone.hidden_size:
            raise RuntimeError("the PEFT model trains more than its soft prompt: check the peft version")
        self.optimizer = torch.optim.AdamW(
            [*prompt_parameters, *self.head.parameters()], lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def step(self, batch) -> float:
        """One optimizer step on a collated batch (`mpt.model.Batch`)."""
        hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        ones = torch.ones((batch.input_ids.shape[0], self.length), dtype=batch.attention_mask.dtype)
        attention = torch.cat([ones, batch.attention_mask], dim=1)
        positions = batch.mask_positions + self.length
        logits = self.head(hidden, attention, positions, torch.full_like(positions, self.length))
        loss = F.cross_entropy(logits.float(), batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def step_plan(self, trainer: Trainer, plan: StepPlan) -> float:
        """The CE batch of the MPT step `plan`, collated by the same templater (inside the timed call)."""
        return self.step(ce_batch(trainer, plan.rows))


def ce_batch(trainer: Trainer, rows: list[int]):
    """The trainer's few-shot rows as a source-language batch, as its step collates them."""
    return trainer.templater.collate(
        [trainer.train_ids[i] for i in rows],
        [trainer.train_labels[i] for i in rows],
        [trainer.config.source_language] * len(rows),
    )


def warm_up(trainer: Trainer, peft: PeftBaseline) -> None:
    """One forward + backward on each side (allocator, oneDNN primitives); no parameter or RNG changes."""
    batch = ce_batch(trainer, list(range(trainer.config.batch_size)))
    classification_loss(trainer.model(batch), batch.labels).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    hidden = peft.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    hidden.sum().backward()
    peft.optimizer.zero_grad(set_to_none=True)
