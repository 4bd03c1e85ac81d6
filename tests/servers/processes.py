"""Real server processes on loopback for the tests: the fault-injecting upstream and the
gateway (``triage serve``), started and stopped as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

UPSTREAM = Path(__file__).with_name("upstream.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def upstream() -> Iterator[str]:
    """The fault-injecting OpenAI-compatible server; yields its base URL."""
    proc = subprocess.Popen([sys.executable, str(UPSTREAM), "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline().split()[-1])
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Gateway:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def gateway(config: Path | None, tmp: Path, *args: str, startup_s: float = 120
            ) -> Iterator[Gateway]:
    """``triage serve`` in its own process, its output in a file; stopped with SIGTERM."""
    port = free_port()
    command = [sys.executable, "-m", "llmtriage.cli", "serve", "--port", str(port), *args]
    if config is not None:
        command += ["--config", str(config)]
    log = tmp / f"gateway-{port}.log"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp / "data")}
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    gw = Gateway(proc, url, log)
    deadline = time.time() + startup_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {gw.output()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"gateway did not start: {gw.output()}")
        time.sleep(0.05)
    try:
        yield gw
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def write_config(path: Path, upstream_url: str, models: dict[str, dict], extra: str = ""
                 ) -> Path:
    """A gateway config whose models are the upstream's behaviours (name -> options)."""
    lines = []
    for name, options in models.items():
        lines += ["[[models]]", f'name = "{name}"', 'backend = "openai"',
                  f'endpoint = "{upstream_url}/v1"']
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
        lines.append("")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@contextmanager
def redis_server(tmp: Path, port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on loopback (no persistence); yields its URL."""
    port = port or free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _pg_bin(name: str) -> str:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    return name


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb in a temporary folder, trust auth on
    loopback); yields its URL; stopped by the postmaster's PID."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="triage-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U",
                                 "triage"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([
        _pg_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"]) + ["start"],
        check=True, capture_output=True)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql://triage@127.0.0.1:{port}/postgres"
    finally:
        try:
            os.kill(pid, signal.SIGINT)  # fast shutdown
            deadline = time.time() + 20
            while time.time() < deadline and (data / "postmaster.pid").exists():
                time.sleep(0.1)
        except ProcessLookupError:
            pass
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def ray_cluster(nodes: int = 2, cpus: int = 2) -> Iterator[str]:
    """A real Ray cluster of ``nodes`` nodes on this machine (a head and workers, each a
    ``ray start --block`` process, stopped by its PID); yields the head's address."""
    import shutil
    import tempfile

    ray = str(Path(sys.executable).with_name("ray"))
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: socket paths
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([ray, "start", "--head", "--block", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                             "--include-dashboard", "false", "--temp-dir", str(temp),
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [head]
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port, head)
        for _ in range(nodes - 1):
            procs.append(subprocess.Popen(
                [ray, "start", "--block", "--address", address, "--node-ip-address",
                 "127.0.0.1", "--num-cpus", str(cpus)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(address, nodes)
        yield address
    finally:
        for proc in reversed(procs):  # each --block process stops its node's children
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the Ray head exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the Ray head did not start")


def _wait_for_nodes(address: str, nodes: int, timeout: float = 90) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True,
                              text=True)
        if done.returncode == 0 and done.stdout.strip() == str(nodes):
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster did not reach {nodes} nodes")
