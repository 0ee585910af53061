"""Real services for the deployment tests, started on this machine as a team runs them and stopped whatever
happens: a Ray cluster of separate `ray start` processes (a head with the dashboard, which serves the Jobs API,
and worker nodes), PostgreSQL in a temporary data directory, and an `mlflow server`.

Everything binds to free ports found at start, so other Ray instances, databases and servers on the machine
(other test runs at the same time) are untouched; each service is stopped by its own process group, never by
`ray stop` (which stops every Ray instance of the machine). Where this machine cannot run a service (no
PostgreSQL, no `ray[default]`, no psycopg) the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT_S = 120
BIN = str(Path(sys.executable).parent)  # `ray`, `mlflow` and `python` of this environment


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, avoid: set[int] = frozenset()) -> list[int]:
    """`count` different ports, free now and none of `avoid`: their sockets stay bound until all are chosen, so
    the system cannot hand out one port twice (one at a time it did: Ray refused two components on one port)."""
    found, sockets = [], []
    try:
        while len(found) < count:
            sockets.append(socket.socket())
            sockets[-1].bind(("127.0.0.1", 0))
            port = sockets[-1].getsockname()[1]
            if port not in avoid:
                found.append(port)
        return found
    finally:
        for sock in sockets:
            sock.close()


def free_port_range(size: int, avoid: set[int] = frozenset()) -> int:
    """The first of `size` consecutive ports that are free now and none of `avoid` (Ray's worker ports; `avoid`:
    the ports chosen for the node's other components, free now too, but taken once Ray starts)."""
    for _ in range(200):
        first = free_port()
        if first + size >= 65535 or avoid & set(range(first, first + size)):
            continue
        try:
            for port in range(first, first + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {size} consecutive free ports")


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a service or a study under test: this Python's tools first, offline, and no
    RAY_ADDRESS of an outer Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {
        **env,
        "PATH": os.pathsep.join([BIN, env.get("PATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def stop_group(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group `pid` leads (a service started with start_new_session), SIGKILL what remains."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def wait_until(ready, what: str, log: Path | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not start in {timeout_s} s\n{tail}")
        time.sleep(0.3)


# --- PostgreSQL ------------------------------------------------------------------------------------------------


def postgres_program(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return versions[-1] if versions else None


@dataclass
class Postgres:
    """A running PostgreSQL server on loopback with a password-protected superuser."""

    port: int
    user: str
    password: str
    data_dir: Path
    run_as: list[str]  # the command prefix that runs a program as the server's (non-root) owner
    host: str = "127.0.0.1"

    def url(self, database: str, password: str | None = None) -> str:
        """A SQLAlchemy URL with psycopg 3, the postgres extra's driver."""
        return (
            f"postgresql+psycopg://{self.user}:{self.password if password is None else password}@{self.host}:"
            f"{self.port}/{database}"
        )

    def createdb(self, name: str) -> str:
        subprocess.run(
            [postgres_program("createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        return self.url(name)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb and start a server in a temporary data directory, owned by a non-root user (PostgreSQL refuses to
    run as root): `postgres` when this is root, else the current user."""
    programs = {name: postgres_program(name) for name in ("initdb", "pg_ctl", "createdb")}
    missing = [name for name, path in programs.items() if path is None]
    if missing:
        pytest.skip(
            f"PostgreSQL is not installed ({', '.join(missing)} not found): `apt-get install postgresql` (.ci/run does)"
        )
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]' (.ci/run does)")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(
                "running as root, and there is no `postgres` user to run PostgreSQL as (Debian's "
                "postgresql package creates it)"
            )
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="mpt-pg-"))  # under /tmp: the postgres user must reach it
    password = "pw-" + os.urandom(6).hex()
    (root / "pwfile").write_text(password + "\n")
    if owner is not None:
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "postgres.log"
    port = free_port()
    server = Postgres(port=port, user="mpt", password=password, data_dir=data, run_as=run_as)
    try:
        subprocess.run(
            [
                *run_as,
                programs["initdb"],
                "-D",
                str(data),
                "-U",
                "mpt",
                f"--pwfile={root / 'pwfile'}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        # fsync off: a throwaway test database (a team's server keeps PostgreSQL's durable defaults)
        subprocess.run(
            [
                *run_as,
                programs["pg_ctl"],
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start here: {err.stderr.decode(errors='replace')[-500:]}")
    try:
        yield server
    finally:
        subprocess.run(
            [*run_as, programs["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


# --- an MLflow tracking server ------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    url: str
    root: Path  # its folder: artifacts/ (the proxied artifact store) and server.log

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


@contextmanager
def running_mlflow_server(root: Path, backend_store_uri: str, workers: int = 1) -> Iterator[MlflowServer]:
    """`mlflow server` on loopback with its backend store and artifacts proxied through it (--serve-artifacts),
    as a team runs it; stopped with its whole process group."""
    port = free_port()
    log = root / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--backend-store-uri",
                backend_store_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            cwd=root,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=service_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # as docs/cluster.md runs it
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            wait_until(healthy, "mlflow server", log)
            yield MlflowServer(url, root)
        finally:
            stop_group(process.pid, grace_s=3)  # uvicorn's graceful shutdown can take 10 s: the test is done


# --- a Ray cluster of `ray start` processes -------------------------------------------------------------------


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen  # `ray start`: its process group holds the node's processes
    log: Path


@dataclass
class RayCluster:
    """A head node (with the dashboard: the Jobs API) and worker nodes, each `ray start` in its own process group,
    in a temporary folder of its own (Ray's temp dir: sessions, logs, the jobs' working-dir copies)."""

    root: Path
    gcs_port: int = field(init=False)
    dashboard_port: int = field(init=False)
    nodes: dict[str, RayNode] = field(default_factory=dict)
    # Ray's token authentication, as a team should run it (every node and client has the token); explicit, so a
    # token that another Ray left in ~/.ray/auth_token changes nothing here
    token: str = field(default_factory=lambda: os.urandom(16).hex())
    node_env: dict[str, str] = field(default_factory=dict)  # what every node's processes see besides

    def __post_init__(self) -> None:
        self.gcs_port, self.dashboard_port = free_ports(2)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of this cluster's nodes and of the clients that talk to it."""
        return service_env(**{**self.node_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **extra})

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def address(self) -> str:
        """What `ray start --address` and `ray.init(address=...)` take (Ray resolves 127.0.0.1 to the host's IP)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        """What `ray job submit --address` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str], env: dict[str, str] | None) -> RayNode:
        # Ray refuses to start when two of its components get one port (seen: a worker port and the Ray Client's;
        # the GCS's and the dashboard agent's)
        chosen = {self.gcs_port, self.dashboard_port}
        chosen |= {int(value) for flag, value in zip(args, args[1:]) if flag.endswith("-port") or flag == "--port"}
        flags = (
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        )
        ports = dict(zip(flags, free_ports(len(flags), avoid=chosen)))
        chosen |= set(ports.values())
        workers = free_port_range(40, avoid=chosen)
        command = [
            f"{BIN}/ray",
            "start",
            *args,
            "--node-name",
            name,
            "--disable-usage-stats",
            "--min-worker-port",
            str(workers),
            "--max-worker-port",
            str(workers + 39),
            *[str(item) for pair in ports.items() for item in pair],
        ]
        log = self.root / f"{name}.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env or self.env(), start_new_session=True
            )
        node = RayNode(name, process, log)
        self.nodes[name] = node
        try:  # `ray start` returns once the node's processes run
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"ray start ({name}) did not return: {log.read_text()[-3000:]}") from None
        if process.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed: {log.read_text()[-3000:]}")
        wait_until(lambda: self.node_state(name) == "ALIVE", f"Ray node {name}", log)
        return node

    def start_head(self, num_cpus: int) -> RayNode:
        args = [
            "--head",
            "--port",
            str(self.gcs_port),
            "--num-cpus",
            str(num_cpus),
            "--temp-dir",
            str(self.root),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
        ]
        if importlib.util.find_spec("grpc") is not None:  # with grpc, `ray start --head` serves Ray Client
            # (default port 10001: taken by another head)
            args += ["--ray-client-server-port", str(free_ports(1, avoid={self.gcs_port, self.dashboard_port})[0])]
        return self._start("head", args, None)

    def add_worker(self, name: str, num_cpus: int, env: dict[str, str] | None = None) -> RayNode:
        # a temp dir of its own, as on another machine: nodes sharing one would unpack a Ray Job's working dir into
        # the same folder, replacing it under the job's running driver
        return self._start(
            name, ["--address", self.address, "--num-cpus", str(num_cpus), "--temp-dir", str(self.root / name)], env
        )

    def nodes_state(self) -> list[dict]:
        """The nodes as Ray's state API lists them (`ray list nodes --detail`: node_id, node_name, state, ...)."""
        request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes?limit=1000&detail=1", headers=self.headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["data"]["result"]["result"]

    def node_state(self, name: str) -> str | None:
        try:
            states = [node["state"] for node in self.nodes_state() if node["node_name"] == name]
        except (OSError, KeyError, ValueError):  # the dashboard is not up yet
            return None
        return "ALIVE" if "ALIVE" in states else (states[-1] if states else None)

    def node_id(self, name: str) -> str:
        [found] = [
            node["node_id"] for node in self.nodes_state() if node["node_name"] == name and node["state"] == "ALIVE"
        ]
        return found

    def jobs(self):
        """Ray's Jobs API client of this cluster."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=self.headers)

    def kill(self, name: str) -> None:
        """Lose a node: SIGKILL every process of it at once (a machine that fails), and wait until Ray sees it."""
        node = self.nodes.pop(name)
        stop_group(node.process.pid, grace_s=0)
        kill_processes_naming(self.root / name)  # its trial processes: Ray gives each a process group of its own
        wait_until(lambda: self.node_state(name) == "DEAD", f"the loss of Ray node {name}", timeout_s=120)

    def stop(self) -> None:
        """Every node's processes, workers before the head; then whatever else runs from this cluster's folder."""
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            stop_group(self.nodes.pop(name).process.pid, grace_s=1)  # the tests are done with it
        kill_processes_naming(self.root)


def kill_processes_naming(folder: Path) -> None:
    """SIGKILL the processes whose command line names `folder` (a Ray node's processes name its temp dir)."""
    import psutil  # a Ray dependency

    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(folder) in part for part in process.info["cmdline"] or []):
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def ray_dashboard_missing() -> str | None:
    """Why this environment cannot serve Ray's dashboard (the Jobs API), None if it can."""
    needed = ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "prometheus_client", "colorful")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    return (
        f"Ray's dashboard needs ray[default] ({', '.join(missing)} missing): pip install -e '.[cluster]'"
        if missing
        else None
    )


@contextmanager
def running_ray_cluster(
    head_cpus: int = 1, worker_cpus: int = 1, env: dict[str, str] | None = None
) -> Iterator[RayCluster]:
    """A head (`head_cpus` CPUs) and one worker node, `worker` (`worker_cpus` CPUs), their processes with `env`
    besides this one's."""
    reason = ray_dashboard_missing()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="mptray-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    cluster = RayCluster(root, node_env=dict(env or {}))
    try:
        cluster.start_head(head_cpus)
        cluster.add_worker("worker", worker_cpus)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
