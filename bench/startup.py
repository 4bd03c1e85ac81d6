"""How long the gateway and the command line take to start: what a user waits for at every
`triage` command and every gateway restart (and what each test that starts one pays).

    python bench/startup.py [--rounds 5] [--against REF]

Reports the median and range over ``--rounds`` of: ``triage --help`` (the CLI's imports),
and ``triage serve`` from launch to its first 200 on ``/health`` (one model passed
through, a keyed client, the request log on: ``bench/gateway_overhead.py``'s pass-through
configuration). With ``--against REF`` the same for the code at a git ref (a worktree of it,
run by this interpreter), rounds alternating so that both see the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import HERE, free_port, gateway_config  # noqa: E402


def timed_help(env: dict) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmtriage.cli", "--help"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def timed_serve(env: dict, config: Path, log: Path) -> float:
    """Launch to the first 200 on /health, polled every 10 ms."""
    port = free_port()
    began = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmtriage.cli", "serve", "--port",
                                 str(port), "--config", str(config)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}: see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - began
            except httpx.HTTPError:
                pass
            if time.perf_counter() - began > 120:
                raise RuntimeError(f"the gateway did not start in 120 s: see {log}")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", metavar="REF", help="also run the code at this git ref")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triage-startup-"))
    trees = {"this tree": {}}
    try:
        if args.against:
            tree = work / "against"
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach",
                            "-q", str(tree), args.against], check=True)
            trees[args.against] = {"PYTHONPATH": str(tree / "src")}
        config = work / "triage.toml"
        # The upstream is never called: the gateway connects on the first request.
        config.write_text(gateway_config("http://127.0.0.1:9", work, ("fixed-a",)))
        times: dict[str, dict[str, list[float]]] = {
            name: {"triage --help": [], "triage serve": []} for name in trees}
        for r in range(args.rounds):
            for name, extra in trees.items():
                env = {**os.environ, **extra}
                times[name]["triage --help"].append(timed_help(env))
                times[name]["triage serve"].append(
                    timed_serve(env, config, work / f"serve-{r}.log"))
        for what in ("triage --help", "triage serve"):
            for name in trees:
                s = sorted(times[name][what])
                print(f"{what:>14} ({name}): {statistics.median(s):.2f} s "
                      f"(rounds {s[0]:.2f}-{s[-1]:.2f})", flush=True)
    finally:
        if args.against:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force",
                            str(work / "against")], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
