"""Browsing a study in the MLflow UI and optuna-dashboard, as a person does: `python study/ui.py NAME` serves a
study's store on loopback; MLflow's REST API (what the UI reads) holds the study, headless Chromium shows it (the
study run opening with the verdict, the best trial and the references; the saved per-language view), and
optuna-dashboard's API shows the study's and the trials' user attributes. The study is the session's shared smoke
study (tests/smoke_studies.py: an MPT configuration wins, a confirmation with a verdict), read, never changed: the
UI serves its store as it is, and the UI's log goes elsewhere.

The browser tests need Debian's `chromium` (`.ci/run` installs it) and are skipped without it. They
drive Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`), so no websocket client
or browser-automation package is needed. Screenshots go under the pytest temporary directory
(`.../ui-screenshots*/`); each test prints its path (`pytest -rP` or `-s` shows it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from search_spaces import PAPER_DEFAULT, PROBE, REFERENCE_POINTS, VANILLA
from study.mlflow_views import RunLink, final_description, per_language_metrics
from study.results import COMPLETE, TrialRow
from study.settings import StudySettings
from study.verdict import build_verdict
from tests.services import free_port
from tests.smoke_studies import SHARED_NAME, SMOKE_EPOCHS, SMOKE_LANGUAGES, SmokeStudy, study_env

REPO_ROOT = Path(__file__).resolve().parent.parent
UI = REPO_ROOT / "study" / "ui.py"
STUDY = SHARED_NAME
SPACE = "alignment"
SEARCHED = {"alignment_weight", "translator_depth", "prompt_length"}
SERVER_START_TIMEOUT_S = 240  # the server imports MLflow's whole app: ~20 s on 2 busy cores
PAGE_TIMEOUT_S = 120  # the UI's first load fetches and parses megabytes of JavaScript
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB
    "--window-size=1600,1000",
]


# --- bad input: a clear message, exit status 2, nothing written -------------------------------------------


def run_ui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(UI), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=study_env()
    )


def test_ui_of_an_unknown_study_names_the_studies_there(tmp_path: Path) -> None:
    (tmp_path / "results" / "other").mkdir(parents=True)
    (tmp_path / "results" / "other" / "study.json").write_text("{}")
    done = run_ui("nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "no study 'nope'" in done.stderr and "studies there: other" in done.stderr
    assert "python study/run.py" in done.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["other"]


def test_ui_of_a_study_without_a_store_says_so_and_creates_none(tmp_path: Path) -> None:
    database = tmp_path / "results" / "mlflow.db"
    settings = StudySettings(name="lost", space=SPACE, mlflow_tracking_uri=f"sqlite:///{database}")
    (tmp_path / "results" / "lost").mkdir(parents=True)
    (tmp_path / "results" / "lost" / "study.json").write_text(settings.to_json())
    done = run_ui("lost", cwd=tmp_path)
    assert done.returncode == 2
    assert "has no MLflow store yet" in done.stderr and "--resume" in done.stderr
    assert not database.exists()


# --- the study run's description, built from given rows (the browser checks the shared study's) -----------------


def _confirmed(number: int, reference: str | None, right: dict[str, int], seeds=(1, 2), rows=20) -> list[TrialRow]:
    """Confirmation rows of one configuration: per language, the first `right[lang]` test rows right, every seed."""
    return [
        TrialRow(
            f"c{number}{seed}",
            number,
            COMPLETE,
            {"seed": seed},
            reference,
            seed=seed,
            test_correct={lang: "1" * n + "0" * (rows - n) for lang, n in right.items()},
        )
        for seed in seeds
    ]


def test_the_study_description_opens_with_the_verdict_then_the_best_trial_the_references_and_per_language():
    languages = ["en", "de", "fr"]
    search = [
        TrialRow("t0", 0, COMPLETE, {}, VANILLA, 0.40, dev_accuracy={"en": 0.5, "de": 0.4, "fr": 0.3}),
        TrialRow("t1", 1, COMPLETE, {}, PAPER_DEFAULT, 0.35, dev_accuracy={"en": 0.5, "de": 0.3, "fr": 0.25}),
        TrialRow("t2", 2, COMPLETE, {}, None, 0.45, dev_accuracy={"en": 0.6, "de": 0.4, "fr": 0.35}),
    ]
    confirm = (
        _confirmed(0, VANILLA, {"en": 10, "de": 8, "fr": 7})
        + _confirmed(1, PAPER_DEFAULT, {"en": 10, "de": 8, "fr": 8})
        + _confirmed(2, None, {"en": 12, "de": 10, "fr": 9})
        + _confirmed(3, PROBE, {"en": 11, "de": 9, "fr": 9})
    )
    verdict = build_verdict(confirm, languages, best_trial=2)
    links = {n: RunLink(f"alignment-00{n}", f"#/experiments/7/runs/run{n}") for n in range(3)}
    text = final_description(
        "s", {"objective": "dev_avg"}, verdict.line, verdict, search, search[2], links, "7", languages
    )
    lines = text.splitlines()
    assert lines[0] == f"**Verdict:** {verdict.line}"  # in full, first
    assert lines[2] == (
        "**Best trial:** [alignment-002](#/experiments/7/runs/run2) (#2, objective `dev_avg` 45.0%); "
        "**references:** [alignment-000](#/experiments/7/runs/run0), "
        "[alignment-001](#/experiments/7/runs/run1)."
    )
    assert "(#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=mpt-study-per-language)" in lines[4]
    # the confirmation's test accuracy per language, mean over the seeds, and the headline's gain
    assert "| #0 vanilla | 50.0 | 40.0 | 35.0 | 37.5 |" in lines and "| #2 best | 60.0 | 50.0 | 45.0 | 47.5 |" in lines
    assert "| MPT (trial 2) - vanilla (pp) | +10.0 | +10.0 | +10.0 | +10.0 |" in lines
    # the frozen probe: its row, and vanilla and the MPT best against it
    assert "| #3 probe | 55.0 | 45.0 | 45.0 | 45.0 |" in lines
    assert "| vanilla - frozen probe (pp) | -5.0 | -5.0 | -10.0 | -7.5 |" in lines
    assert "| MPT (trial 2) - frozen probe (pp) | +5.0 | +5.0 | +0.0 | +2.5 |" in lines
    assert text.endswith("hold the same).")  # then what the study run is
    # no confirmation: the search's dev per language, one seed, of the best trial and the references
    unconfirmed = final_description("s", {}, "none", None, search, search[0], links, "7", languages).splitlines()
    assert unconfirmed[0] == "**Verdict:** none" and "| #0 best (vanilla) | 50.0 | 40.0 | 30.0 |" in unconfirmed
    assert "| #1 paper_default | 50.0 | 30.0 | 25.0 |" in unconfirmed and not any("#2" in line for line in unconfirmed)


# --- a smoke study served by study/ui.py -------------------------------------------------------------------


@dataclass
class Server:
    cwd: Path
    port: int
    base_url: str
    experiment_url: str  # what study/ui.py printed for the user to open
    settings: dict[str, Any]
    printed: str  # what study/ui.py printed (the address, the command it started)
    verdict: str  # the study's verdict line, the last line the study printed (after "Verdict: ")
    session: int  # the process session of study/ui.py and of the server it became


def get_json(base_url: str, endpoint: str, **query: Any) -> dict:
    url = f"{base_url}{endpoint}?{urllib.parse.urlencode(query)}" if query else f"{base_url}{endpoint}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def post_json(base_url: str, endpoint: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{base_url}{endpoint}",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def wait_for_server(process: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"study/ui.py exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"the MLflow server answered no /health in {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and the children it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    try:  # children may outlive their parent
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(smoke_study: SmokeStudy, tmp_path_factory):
    cwd = smoke_study.cwd
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(UI), STUDY, "--port", str(port)],
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=study_env(),
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_server(process, base_url, log)
        printed = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?\S+", log.read_text())
        assert printed, f"study/ui.py printed no address of the study:\n{log.read_text()[-2000:]}"
        settings = json.loads((cwd / "results" / STUDY / "study.json").read_text())
        verdict = smoke_study.done.stdout.rstrip().splitlines()[-1].removeprefix("Verdict: ")
        yield Server(cwd, port, base_url, printed.group(0), settings, log.read_text(), verdict, process.pid)
    finally:
        stop_process_group(process)


def session_commands(session: int) -> list[str]:
    """The command lines of the processes in a session."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == session:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # ended meanwhile
            pass
    return found


@pytest.mark.slow
def test_the_ui_server_runs_without_mlflows_job_runner(server: Server) -> None:
    """MLflow's job execution (GenAI judges, trace jobs) starts a runner and seven worker processes, about 22 s of
    CPU here: study/ui.py turns it off for browsing a study."""
    commands = session_commands(server.session)
    assert any("uvicorn" in command for command in commands), commands  # the server is there
    assert not [command for command in commands if "mlflow.server.jobs" in command or "huey" in command]


@dataclass
class StudyRuns:
    experiment_id: str
    parent: dict
    trials: list[dict]  # the search's trial runs
    confirmations: list[dict]  # the confirmation's runs
    artifact_location: str  # the experiment's: where its runs' artifacts are

    def best(self) -> dict:
        """The search's best trial: the highest objective, the earlier trial on a tie (the study's own rule)."""
        return max(self.trials, key=lambda t: (metrics(t)["objective"], -int(tags(t)["trial_number"])))


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.fixture(scope="module")
def study_runs(server: Server) -> StudyRuns:
    """The study's runs, as the UI fetches them (MLflow's REST API)."""
    experiment = get_json(server.base_url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=STUDY)[
        "experiment"
    ]
    runs = post_json(
        server.base_url,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000},
    )["runs"]
    parents = [r for r in runs if tags(r).get("mpt_study.run_type") == "study"]
    assert len(parents) == 1, [r["info"]["run_name"] for r in runs]
    trials = sorted(
        (r for r in runs if tags(r).get("mpt_study.run_type") == "trial"), key=lambda r: r["info"]["run_name"]
    )
    return StudyRuns(
        experiment["experiment_id"],
        parents[0],
        [t for t in trials if tags(t).get("mpt_study.phase") == "search"],
        [t for t in trials if tags(t).get("mpt_study.phase") != "search"],
        experiment["artifact_location"],
    )


@pytest.mark.slow
def test_ui_refuses_a_port_in_use(server: Server) -> None:
    done = run_ui(STUDY, "--port", str(server.port), cwd=server.cwd)
    assert done.returncode == 2
    assert f"port {server.port}" in done.stderr and "in use" in done.stderr and "--port" in done.stderr


@pytest.mark.slow
def test_ui_prints_the_study_runs_page_and_serves_its_own_artifacts(server: Server, study_runs: StudyRuns) -> None:
    assert server.experiment_url == (
        f"{server.base_url}/#/experiments/{study_runs.experiment_id}/runs?workflowType=machine_learning"
    )
    # the artifact root the study used (results/mlartifacts, its experiment's folder inside), read where it is
    root = (server.cwd / "results" / "mlartifacts").as_uri()
    assert study_runs.artifact_location == f"{root}/{STUDY}" and (server.cwd / "results" / "mlartifacts").is_dir()
    assert f"--default-artifact-root {root} --no-serve-artifacts " in server.printed
    assert "--artifacts-destination" not in server.printed


@pytest.mark.slow
def test_rest_api_holds_the_study_with_its_nested_trials(server: Server, study_runs: StudyRuns) -> None:
    parent, trials = study_runs.parent, study_runs.trials
    assert parent["info"]["run_name"] == STUDY and parent["info"]["status"] == "FINISHED"
    assert "report/report.md" in tags(parent)["mlflow.note.content"]  # the description its page shows
    experiment = get_json(server.base_url, "/api/2.0/mlflow/experiments/get", experiment_id=study_runs.experiment_id)[
        "experiment"
    ]
    assert "nested" in {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.note.content"]
    assert len(trials) == server.settings["num_samples"] == 5
    assert [t["info"]["run_name"].split()[0] for t in trials] == [f"{SPACE}-{n:03d}" for n in range(5)]
    assert trials[0]["info"]["run_name"] == f"{SPACE}-000 vanilla"
    assert trials[1]["info"]["run_name"] == f"{SPACE}-001 paper_default"
    assert trials[2]["info"]["run_name"] == f"{SPACE}-002 probe"
    assert re.fullmatch(rf"{SPACE}-003 w=[0-9.e-]+ depth=\d+ len=\d+", trials[3]["info"]["run_name"])
    for trial in trials:
        assert tags(trial)["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert trial["info"]["status"] == "FINISHED"
        assert SEARCHED <= {p["key"] for p in trial["data"]["params"]}
        for lang in SMOKE_LANGUAGES:  # dev at the selected epoch (search trials never evaluate test)
            assert 0.0 <= metrics(trial)[f"selected_dev_acc_{lang}"] <= 1.0
    for key in ("loss", "ce_loss", "kl_loss", "dev_acc_en", *(f"selected_dev_acc_{lang}" for lang in SMOKE_LANGUAGES)):
        history = get_json(
            server.base_url, "/api/2.0/mlflow/metrics/get-history", run_id=trials[1]["info"]["run_id"], metric_key=key
        )["metrics"]
        assert sorted(m["step"] for m in history) == list(range(1, SMOKE_EPOCHS + 1)), key  # step = epoch
    listed = get_json(
        server.base_url, "/api/2.0/mlflow/artifacts/list", run_id=parent["info"]["run_id"], path="report"
    )["files"]
    assert {"report/report.md", "report/report.html", "report/search_per_language.png"} <= {f["path"] for f in listed}


@pytest.mark.slow
def test_rest_api_marks_the_best_trial_and_the_references(server: Server, study_runs: StudyRuns) -> None:
    """`mpt_study.role` on the best trial's run and on each reference's, a colour of its own on every trial run, the
    headline alone as the study run's metrics, and the per-language view saved on the experiment."""
    best = study_runs.best()
    for trial in study_runs.trials:
        reference = tags(trial).get("mpt_study.reference")
        expected = (f"best ({reference})" if reference else "best") if trial is best else reference
        assert tags(trial).get("mpt_study.role") == expected, trial["info"]["run_name"]
    assert set(REFERENCE_POINTS) <= {tags(t).get("mpt_study.reference") for t in study_runs.trials}
    assert len({tags(t)["mlflow.runColor"] for t in study_runs.trials}) == len(study_runs.trials)
    # the headline only: the best objective and the verdict's numbers, none of a trial's
    headline = metrics(study_runs.parent)
    assert {"best_objective", "gain_avg_target", "gain_avg_target_low", "gain_avg_target_high"} <= set(headline)
    assert not [key for key in headline if key.startswith(("loss", "ce_loss", "kl_loss", "dev_acc", "selected_dev"))]
    assert headline["best_objective"] == metrics(best)["objective"]
    assert tags(best).get("mpt_study.reference") is None  # an MPT configuration won (the shared study's hook)
    # its confirmation runs carry the best trial's role too
    assert {tags(r).get("mpt_study.role") for r in study_runs.confirmations} >= {"best", *REFERENCE_POINTS}
    experiment = get_json(server.base_url, "/api/2.0/mlflow/experiments/get", experiment_id=study_runs.experiment_id)[
        "experiment"
    ]
    experiment_tags = {t["key"]: t["value"] for t in experiment["tags"]}
    view = json.loads(experiment_tags["mlflow.sharedViewState.mpt-study-per-language"])
    assert view["name"] == "Best vs references, per language"
    assert json.loads(view["state"])["searchFilter"] == "tags.`mpt_study.role` IS NOT NULL"


@pytest.mark.slow
def test_the_report_says_in_words_what_chance_level_is(server: Server) -> None:
    study_dir = server.cwd / "results" / STUDY
    said = "Chance level is 33.3%.** NLI has three labels, balanced in XNLI and in the mini set"
    assert said in (study_dir / "report.md").read_text()
    assert "Chance level is 33.3%.</strong> NLI has three labels" in (study_dir / "report.html").read_text()


# --- the UI in headless Chromium ---------------------------------------------------------------------------


class DevToolsError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe: with --remote-debugging-pipe the
    browser reads commands on fd 3 and answers on fd 4, one JSON message per NUL-terminated chunk."""

    def __init__(self, profile: Path, log: Path) -> None:
        command_read, self._commands = os.pipe()
        self._answers, answer_write = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            read_end, write_end = os.dup(command_read), os.dup(answer_write)  # off 3 and 4 first
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        with log.open("w") as output:
            self.process = subprocess.Popen(
                [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=wire_pipes,
                close_fds=False,
                start_new_session=True,
            )
        os.close(command_read)
        os.close(answer_write)
        self._buffer = b""
        self._last_id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=self.session)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params: Any) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for answer in self._read(deadline, method):
                if answer.get("id") == self._last_id:  # events (no id) are not needed here
                    if "error" in answer:
                        raise DevToolsError(f"{method}: {answer['error']}")
                    return answer.get("result", {})

    def _read(self, deadline: float, method: str) -> list[dict]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"Chromium did not answer {method} in time")
            if self.process.poll() is not None:
                raise DevToolsError(f"Chromium exited with {self.process.returncode} during {method}")
            ready, _, _ = select.select([self._answers], [], [], min(remaining, 1.0))
            if ready:
                self._buffer += os.read(self._answers, 1 << 20)
        *chunks, self._buffer = self._buffer.split(b"\0")
        return [json.loads(chunk) for chunk in chunks]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=self.session, url=url)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, expression: str, what: str, screenshot: Path, timeout: float = PAGE_TIMEOUT_S) -> Any:
        """Poll a JavaScript expression until it is truthy; on timeout keep a screenshot of what was shown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        failed = screenshot.with_name(f"{screenshot.stem}-failed.png")
        self.screenshot(failed)
        pytest.fail(
            f"the UI did not show {what} within {timeout:.0f} s (screenshot: {failed}); the page "
            f"read:\n{self.text()[:3000]}"
        )

    def click(self, expression: str) -> None:
        """Click the middle of the element the expression returns, with the mouse, as a person would."""
        box = self.evaluate(
            f"(() => {{ const element = {expression}; element.scrollIntoView({{block: 'center'}}); "
            f"const r = element.getBoundingClientRect(); return {{x: r.x + r.width / 2, "
            f"y: r.y + r.height / 2}}; }})()"
        )
        for event in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                session=self.session,
                type=event,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except DevToolsError:  # it closed before answering, or did not answer: stopped below either way
            pass
        os.close(self._commands)
        os.close(self._answers)
        stop_process_group(self.process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium on a fresh profile; tests list it first, so without Chromium they skip at once."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"Chromium is not installed ({CHROMIUM} is missing): the browser checks need Debian's "
            f"`chromium` (apt-get install -y chromium; .ci/run installs it)"
        )
    folder = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(folder / "profile", folder / "chromium.log")  # a fresh profile: no earlier UI state
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


def js(value: Any) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value)


@pytest.mark.slow
def test_browser_lists_the_trials_nested_under_the_study(
    browser: Chromium, server: Server, study_runs: StudyRuns, screenshots: Path
) -> None:
    page = screenshots / "runs.png"
    browser.open(server.experiment_url)  # the address study/ui.py printed
    parent_link = f"document.querySelector('a[href$=\"/runs/{study_runs.parent['info']['run_id']}\"]')"
    browser.wait_for(
        f"{parent_link} && document.body.innerText.includes('matching runs')",
        "the runs table with the study's parent run",
        page,
    )
    names = [t["info"]["run_name"] for t in study_runs.trials]
    shown = f"{js(names)}.filter(name => document.body.innerText.includes(name))"
    # nested: the table folds the trials under the study run until its + is clicked
    assert browser.evaluate(f"{shown}.length") == 0, "trial runs are listed beside the study, not nested in it"
    browser.click(f"{parent_link}.closest('[role=gridcell]').querySelector('button')")
    browser.wait_for(f"{shown}.length === {len(names)}", f"the {len(names)} trial runs {names}", page)
    rows = browser.evaluate("[...document.querySelectorAll('[role=row]')].map(row => row.innerText)")
    for name in names:
        assert any(name in row for row in rows), f"no table row lists {name!r}"
    print(f"\nscreenshot of the runs table: {browser.screenshot(page)}")
    assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_browser_opens_the_study_run_with_its_answer_and_the_per_language_view(
    browser: Chromium, server: Server, study_runs: StudyRuns, screenshots: Path
) -> None:
    """The study run's page opens with the verdict in full, the best trial and the references linked to their runs;
    its link to the saved view opens the runs of the best trial and the references grouped by role and phase, with
    every per-language column's title shown whole."""
    page, view = screenshots / "study-run.png", screenshots / "per-language-view.png"
    experiment = study_runs.experiment_id
    # a wide window: the run page puts its description first only beside the UI's assistant panel, which opens on
    # a first visit, and the runs table draws only the columns in view
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        session=browser.session,
        width=3200,
        height=1000,
        deviceScaleFactor=1,
        mobile=False,
    )
    try:
        browser.open("about:blank")
        browser.open(
            f"{server.base_url}/#/experiments/{experiment}/runs/{study_runs.parent['info']['run_id']}"
            f"?workflowType=machine_learning"
        )
        verdict = "[...document.querySelectorAll('p')].find(p => p.innerText.startsWith('Verdict:'))"
        shown = browser.wait_for(f"{verdict}?.innerText", "the study run's description with the verdict", page)
        assert shown == f"Verdict: {server.verdict}"  # the whole line, first
        links = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.innerText]))"
        )
        marked = [t for t in study_runs.trials if tags(t).get("mpt_study.role")]
        assert {t["info"]["run_name"] for t in marked} >= {
            f"{SPACE}-000 vanilla",
            f"{SPACE}-001 paper_default",
            f"{SPACE}-002 probe",
        }
        for trial in marked:  # the best trial and each reference, linked to its run
            assert links.get(f"#/experiments/{experiment}/runs/{trial['info']['run_id']}") == trial["info"]["run_name"]
        target = next(href for href, text in links.items() if text == "Best vs references, per language")
        print(f"\nscreenshot of the study run: {browser.screenshot(page)}")

        browser.open("about:blank")
        browser.open(f"{server.base_url}/{target}")
        # the search's and the confirmation's runs of each configuration with a role, a group each
        shown_runs = marked + [r for r in study_runs.confirmations if tags(r).get("mpt_study.role")]
        groups = sorted(
            {
                f"mpt_study.role: {tags(r)['mpt_study.role']}, mpt_study.phase: {tags(r)['mpt_study.phase']}"
                for r in shown_runs
            }
        )
        browser.wait_for(
            f"{js(groups)}.every(group => (document.body?.innerText || '').includes(group))",
            f"the groups {groups}",
            view,
        )
        # title -> whether it shows whole: its box not clipped by its column (at the UI's default width,
        # 100 px, `selected_dev_acc_de` shows as "selected_dev_a...")
        titles = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.ag-header-cell[col-id^=\"metrics.\"]')].map(cell => {"
            " const text = [...cell.querySelectorAll('*')].filter(e => e.children.length === 0 && e.innerText).pop();"
            " const box = text.parentElement; return [cell.innerText.trim(), box.scrollWidth <= box.clientWidth"
            " && text.getBoundingClientRect().right <= cell.getBoundingClientRect().right]; }))"
        )
        print(f"\nscreenshot of the per-language view: {browser.screenshot(view)}")
        # each column of the view that the study's runs have (test accuracy: the confirmation's), titled whole
        logged = [m for m in per_language_metrics(SMOKE_LANGUAGES) if any(m in metrics(r) for r in shown_runs)]
        assert logged and titles == {metric: True for metric in logged}
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride", session=browser.session)


@pytest.mark.slow
def test_browser_shows_the_report_as_an_artifact_of_the_study(
    browser: Chromium, server: Server, study_runs: StudyRuns, screenshots: Path
) -> None:
    page = screenshots / "report.png"
    run_id = study_runs.parent["info"]["run_id"]
    browser.open(
        f"{server.base_url}/#/experiments/{study_runs.experiment_id}/runs/{run_id}/artifacts/"
        f"report/report.md?workflowType=machine_learning"
    )
    # the artifact tree lists the plots, and the preview renders report.md's Markdown
    browser.wait_for(
        "document.body.innerText.includes('search_per_language.png') && "
        "[...document.querySelectorAll('h1, h2')].some(h => h.innerText.includes('Verdict'))",
        "report/report.md rendered with its plots listed",
        page,
    )
    print(f"\nscreenshot of the study's report artifact: {browser.screenshot(page)}")


@pytest.mark.slow
def test_browser_shows_the_html_report_with_its_plots(
    browser: Chromium, server: Server, study_runs: StudyRuns, screenshots: Path
) -> None:
    page = screenshots / "report-html.png"
    run_id = study_runs.parent["info"]["run_id"]
    browser.open("about:blank")  # a fresh load: on a hash change alone the UI keeps the artifact it showed
    browser.open(
        f"{server.base_url}/#/experiments/{study_runs.experiment_id}/runs/{run_id}/artifacts/"
        f"report/report.html?workflowType=machine_learning"
    )
    # MLflow shows an HTML artifact in a sandboxed frame of its own (a blob: URL in a process of its own, which
    # the page cannot script), so the check attaches to that frame through DevTools and looks inside: every plot
    # of the report decoded and laid out there
    plots = len(list((server.cwd / "results" / STUDY).glob("*.png")))
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    shown, sessions = None, {}  # the UI may render the frame more than once: look in the current one
    while time.monotonic() < deadline and shown != [True, plots]:
        time.sleep(0.5)
        frames = [
            t["targetId"]
            for t in browser.call("Target.getTargets")["targetInfos"]
            if t["type"] == "iframe" and t["url"].startswith("blob:")
        ]
        if not frames:
            continue
        if frames[-1] not in sessions:
            sessions[frames[-1]] = browser.call("Target.attachToTarget", targetId=frames[-1], flatten=True)["sessionId"]
        shown = browser.call(
            "Runtime.evaluate",
            session=sessions[frames[-1]],
            returnByValue=True,
            expression="[[...document.querySelectorAll('h2')].some(h => h.innerText.includes("
            "'Verdict')), [...document.images].filter(i => i.complete && "
            "i.naturalWidth > 0 && i.src.startsWith('data:image/png')).length]",
        )["result"].get("value")
    print(f"\nscreenshot of the study's HTML report: {browser.screenshot(page)}")
    assert shown == [True, plots], f"report.html's frame showed (heading, plots) {shown}, expected [True, {plots}]"


@pytest.mark.slow
def test_browser_charts_a_trial_per_epoch(
    browser: Chromium, server: Server, study_runs: StudyRuns, screenshots: Path
) -> None:
    page = screenshots / "trial-metrics.png"
    trial = study_runs.trials[1]
    name = trial["info"]["run_name"]
    # a tall window: the UI draws only the charts in view, and this page has one per metric
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        session=browser.session,
        width=1600,
        height=3200,
        deviceScaleFactor=1,
        mobile=False,
    )
    try:
        browser.open(
            f"{server.base_url}/#/experiments/{study_runs.experiment_id}/runs/{trial['info']['run_id']}/"
            f"model-metrics?workflowType=machine_learning"
        )
        charts = ["loss", "ce_loss", "kl_loss", *(f"dev_acc_{lang}" for lang in SMOKE_LANGUAGES)]
        # a drawn chart carries its legend "<run name> (<metric>)" and a "Step" axis (step = epoch)
        legends = [f"{name} ({chart})" for chart in charts]
        browser.wait_for(
            f"{js(legends)}.every(legend => document.body.innerText.includes(legend)) && "
            f"document.body.innerText.includes('Step')",
            f"per-epoch charts of {charts}",
            page,
        )
        print(f"\nscreenshot of a trial's per-epoch charts: {browser.screenshot(page)}")
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride", session=browser.session)


# --- optuna-dashboard ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_optuna_dashboard_shows_the_verdict_the_mlflow_links_and_each_trials_role(
    server: Server, study_runs: StudyRuns
) -> None:
    """The study's and the trials' user attributes, through Optuna's API and through optuna-dashboard's own (its
    WSGI app, served on a free port)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(server.cwd / "results" / STUDY / "optuna.log")))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    experiment = f"http://127.0.0.1:5000/#/experiments/{study_runs.experiment_id}/runs?workflowType=machine_learning"
    assert study.user_attrs == {
        "verdict": server.verdict,
        "mlflow_experiment_url": experiment,
        "mlflow_per_language_view_url": f"{experiment}&viewStateShareKey=mpt-study-per-language",
        "importance_caveat": f"only {server.settings['num_samples']} complete trials: parameter importances need at "
        "least 8 to mean anything (the report shows none), so read the dashboard's importance "
        "chart as noise",
    }
    runs = {tags(run)["ray.trial_id"]: run for run in study_runs.trials}
    for trial in study.trials:
        run = runs[trial.user_attrs["ray_trial_id"]]
        assert trial.user_attrs["mlflow_run_id"] == run["info"]["run_id"]
        assert trial.user_attrs["role"] == tags(run).get("mpt_study.reference", "search")
        assert trial.user_attrs["seed"] == server.settings["seed"]
        for lang in SMOKE_LANGUAGES:
            assert trial.user_attrs[f"selected_dev_acc_{lang}"] == metrics(run)[f"selected_dev_acc_{lang}"]

    dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard (the dev extra) is not installed")
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # no line per request in the test's output
            pass

    httpd = make_server("127.0.0.1", 0, dashboard.wsgi(storage), handler_class=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        listed = get_json(base, "/api/studies")["study_summaries"]
        detail = get_json(base, f"/api/studies/{next(s['study_id'] for s in listed if s['study_name'] == STUDY)}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    shown = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert shown["verdict"] == server.verdict and shown["mlflow_experiment_url"] == experiment
    assert "importance_caveat" in shown
    trial_roles = {t["number"]: {a["key"]: a["value"] for a in t["user_attrs"]}["role"] for t in detail["trials"]}
    assert trial_roles == {t.number: t.user_attrs["role"] for t in study.trials}
    assert [trial_roles[n] for n in range(len(REFERENCE_POINTS))] == list(REFERENCE_POINTS)  # the references first
