"""The MPT hyperparameter study: Ray Tune + Optuna + MLflow around `trainable` and `search_spaces`.

Its commands: `mpt-study` (`study.run`), `mpt-report` (`study.report`) and `mpt-ui` (`study.ui`) once the project
is installed; in a checkout installed with `pip install -e .` also `python study/run.py`, `python study/report.py`
and `python study/ui.py` from the repository root. docs/architecture.md lists every module's job.
"""
