"""The MPT hyperparameter study: Ray Tune + Optuna + MLflow around `trainable` and `search_spaces`.

Entry points are scripts, run from the repository root: `python study/run.py --space NAME` and
`python study/report.py NAME`.
"""
