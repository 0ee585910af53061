"""The planted bugs of the mutation check (`python -m tests.mutation.run`): each one a bug a real change could
introduce, which the fast tier must notice.

A mutant replaces `old` (which must occur exactly once in `file`) by `new`; `first` names the test files that
target it, which run before the rest of the fast tier (the check stops at the first failure). A `slow` mutant is
one only an end-to-end study notices: its `first` files alone run, slow tests included (`--slow`; minutes each).
When the code a mutant names changes, the runner refuses the stale mutant: rewrite it against the new text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    why: str
    first: tuple[str, ...] = ()
    slow: bool = False  # caught by slow tests of `first` only (python -m tests.mutation.run --slow)


LEARNING = "tests/test_mpt_learning.py"

MUTANTS: tuple[Mutant, ...] = (
    # --- the method ---------------------------------------------------------------------------------------
    Mutant(
        "loss_sign",
        "mpt/training.py",
        "        loss.backward()\n",
        "        (-loss).backward()\n",
        "the training loss's sign flipped: gradient ascent",
        (LEARNING,),
    ),
    Mutant(
        "kl_no_t_squared",
        "mpt/losses.py",
        'reduction="batchmean") * temperature**2',
        'reduction="batchmean")',
        "the KL's T^2 scaling removed",
        (LEARNING,),
    ),
    Mutant(
        "kl_arguments_swapped",
        "mpt/losses.py",
        "F.kl_div(log_target, log_source, log_target=True",
        "F.kl_div(log_source, log_target, log_target=True",
        "KL(P_tgt || P_src) instead of KL(P_src || P_tgt)",
        (LEARNING,),
    ),
    Mutant(
        "kl_temperature_one_side",
        "mpt/losses.py",
        "log_target = F.log_softmax(target_logits.float() / temperature, dim=-1)",
        "log_target = F.log_softmax(target_logits.float(), dim=-1)",
        "the temperature softens the teacher only",
        (LEARNING,),
    ),
    Mutant(
        "one_minus_w_is_one",
        "mpt/losses.py",
        "return (1.0 - alignment_weight) * ce + alignment_weight * kl",
        "return ce + alignment_weight * kl",
        "(1 - w) replaced by 1: CE at full weight whatever w",
        (LEARNING,),
    ),
    Mutant(
        "w_on_ce_only_steps",
        "mpt/training.py",
        "config.alignment_weight if plan.pair_rows else 0.0",
        "config.alignment_weight",
        "CE-only steps (no pairs) weighted by (1 - w)",
        (LEARNING,),
    ),
    Mutant(
        "no_translator_for_targets",
        "mpt/model.py",
        "return source if lang == self.config.source_language else self.translator(source, lang)",
        "return source",
        "the translator dropped: target languages get p_S",
        (LEARNING,),
    ),
    Mutant(
        "pairs_use_the_first_targets_translator",
        "mpt/training.py",
        "[self.pair_langs[i] for i in pair_rows]\n        ).to(self.device)",
        "[self.config.target_languages[0]] * len(pair_rows)\n        ).to(self.device)",
        "every parallel pair aligned through the first target language's translator",
        (LEARNING,),
    ),
    Mutant(
        "translator_without_relu",
        "mpt/translator.py",
        "self.down(torch.relu(self.up(prompt)))",
        "self.down(self.up(prompt))",
        "the perceptron block loses its nonlinearity",
        ("tests/test_mpt_components.py",),
    ),
    Mutant(
        "stop_gradient_ignored",
        "mpt/training.py",
        "teacher_context = torch.no_grad() if self.config.teacher_stop_gradient else contextlib.nullcontext()",
        "teacher_context = contextlib.nullcontext()",
        "the teacher is trained by the KL too",
        (LEARNING,),
    ),
    Mutant(
        "stop_gradient_always",
        "mpt/training.py",
        "teacher_context = torch.no_grad() if self.config.teacher_stop_gradient else contextlib.nullcontext()",
        "teacher_context = torch.no_grad()",
        "teacher_stop_gradient=false does nothing",
        (LEARNING,),
    ),
    # --- model selection ----------------------------------------------------------------------------------
    Mutant(
        "last_state_tested",
        "mpt/training.py",
        "self.model.load_trainable_state_dict(self.best_state)",
        "self.model.load_trainable_state_dict(final_state)",
        "test accuracy of the last state instead of the best-dev one",
        (LEARNING,),
    ),
    Mutant(
        "best_state_never_kept",
        "mpt/training.py",
        "self.best_dev_accuracy, self.best_epoch = source_dev, self.epoch\n"
        "            self.best_state = self.model.trainable_state_dict()",
        "self.best_dev_accuracy, self.best_epoch = source_dev, self.epoch",
        "the selected epoch is named but its state not kept: the initial state is tested",
        (LEARNING,),
    ),
    Mutant(
        "ties_select_the_later_epoch",
        "mpt/training.py",
        "selected = source_dev > self.best_dev_accuracy",
        "selected = source_dev >= self.best_dev_accuracy",
        "a tie on dev moves the selection to the later epoch",
        (LEARNING, "tests/test_mpt_training.py"),
    ),
    Mutant(
        "ce_only_epochs_off_by_one",
        "mpt/training.py",
        "self.epoch + 1 > config.ce_only_epochs",
        "self.epoch + 1 >= config.ce_only_epochs",
        "the alignment task starts an epoch early",
        ("tests/test_mpt_training.py",),
    ),
    # --- validation ---------------------------------------------------------------------------------------
    Mutant(
        "ce_only_epochs_unchecked",
        "mpt/config.py",
        "self.alignment_weight == 0 or self.ce_only_epochs < self.epochs,",
        "True,",
        "ce_only_epochs >= epochs silently disables the alignment task",
        ("tests/test_mpt_components.py",),
    ),
    # --- test speed and isolation -------------------------------------------------------------------------
    Mutant(
        "figure_cache_ignores_the_data",
        "mpt/data/quality.py",
        '        *sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix != ".md"),\n',
        "",
        "cached quality figures read back after the data changed",
        ("tests/test_mini_data.py",),
    ),
    Mutant(
        "pkg_resources_stand_in_left_behind",
        "study/language_distance.py",
        '            if sys.modules.get("pkg_resources") is shim:\n                del sys.modules["pkg_resources"]',
        "            pass",
        "lang2vec's pkg_resources stand-in breaks pytest's syspath_prepend for later tests",
        ("tests/test_language_distance.py",),
    ),
    # --- the study ----------------------------------------------------------------------------------------
    Mutant(
        "tpe_is_random_search",
        "study/search.py",
        "sampler = optuna.samplers.TPESampler(\n"
        "            seed=seed,\n"
        "            multivariate=True,\n"
        "            # random start-up trials: Optuna's 10 would leave a 12-trial study almost no TPE trials\n"
        "            n_startup_trials=max(2, min(10, num_samples // 3)),\n"
        "        )",
        "sampler = optuna.samplers.RandomSampler(seed=seed)",
        "the study's searcher replaced by random search",
        ("tests/test_searcher.py", "tests/test_search_spaces.py", "tests/test_study_units.py"),
    ),
    Mutant(
        "confirmation_drops_the_probe",
        "study/tuner.py",
        "    for name in REFERENCE_POINTS:\n",
        "    for name in list(REFERENCE_POINTS)[:2]:\n",
        "the confirmation retrains vanilla and the paper default but not the frozen probe",
        ("tests/test_search_spaces.py",),
    ),
    Mutant(
        "probe_runs_with_a_prompt",
        "study/search.py",
        "            config.update(REFERENCE_POINTS[role])",
        "            config.update({k: v for k, v in REFERENCE_POINTS[role].items() if k not in params})",
        "the probe reference trains a prompt of the base's length (a searched length overrides its 0)",
        ("tests/test_search_spaces.py",),
    ),
    Mutant(
        "probe_taken_for_mpt",
        "study/verdict.py",
        "        if c is vanilla or c.reference == PROBE:",
        "        if c is vanilla:",
        "the frozen probe is compared with vanilla as if it were a prompt configuration",
        ("tests/test_verdict.py",),
    ),
    # --- what MLflow shows ----------------------------------------------------------------------------------
    Mutant(
        "confirmation_runs_chart_objective",
        "trainable/metrics.py",
        "and (ranked or key != OBJECTIVE)",
        "",
        "a confirmation run's English dev charted as `objective` beside the search's dev average",
        ("tests/test_study_units.py",),
    ),
    Mutant(
        "per_language_csv_with_holes",
        "study/tracking.py",
        "if values and set(values) == set(languages)}",
        "if values}",
        "results_per_language.csv with a column some languages leave empty",
        ("tests/test_study_units.py",),
    ),
    Mutant(
        "description_cuts_the_verdict",
        "study/mlflow_views.py",
        'lines = [f"**Verdict:** {verdict_line}", ""]',
        'lines = [f"**Verdict:** {verdict_line[:40]}", ""]',
        "the study run's description cuts the verdict line",
        ("tests/test_ui.py",),
    ),
    Mutant(
        "best_reference_loses_best",
        "study/tracking.py",
        'return f"{BEST_ROLE} ({reference})"',
        "return reference",
        "a best trial that is a reference is not marked best",
        ("tests/test_ui.py",),
    ),
    # --- the study end to end (slow: each runs the shared smoke study, an MPT configuration winning it) ---------
    Mutant(
        "confirmation_drops_an_mpt_best",
        "study/tuner.py",
        "    candidates = top_rows(rows, top)\n",
        "    candidates = [row for row in top_rows(rows, top) if row.reference]\n",
        "the confirmation retrains the references only when the best trial is an MPT configuration",
        ("tests/test_study.py",),
        slow=True,
    ),
    Mutant(
        "best_model_is_vanillas",
        "study/run.py",
        "trial_result(grid, best.trial_id)",
        "trial_result(grid, reference_row(rows, VANILLA).trial_id)",
        "best_model/ and the pyfunc model are vanilla's trained prompt",
        ("tests/test_mlflow_model.py",),
        slow=True,
    ),
    Mutant(
        "confirmation_not_resumed",
        "study/tuner.py",
        'tracker_for("confirm"),\n        resume,\n        suffix=suffix,',
        'tracker_for("confirm"),\n        False,\n        suffix=suffix,',
        "--resume starts an interrupted confirmation over",
        ("tests/test_study_resume.py",),
        slow=True,
    ),
    Mutant(
        "ray_joins_another_cluster",
        "study/tuner.py",
        'ray.init(\n            address="local",\n            num_cpus',
        "ray.init(\n            num_cpus",
        "a local study joins the cluster of RAY_ADDRESS or of the last `ray start` here",
        ("tests/test_gpu_placement.py",),
        slow=True,
    ),
    Mutant(
        "ui_server_runs_mlflow_jobs",
        "study/ui.py",
        'env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}',
        "env = {**os.environ}",
        "the study browser's MLflow server starts MLflow's job runner and its seven workers",
        ("tests/test_ui.py",),
        slow=True,
    ),
)
