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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import free_port, gateway_config, start, worktree  # noqa: E402


def timed_help(env: dict) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmtriage.cli", "--help"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def timed_serve(env: dict, config: Path, log: Path) -> float:
    """Launch to the first 200 on /health, asked every 10 ms."""
    port = free_port()
    began = time.perf_counter()
    proc = start([sys.executable, "-m", "llmtriage.cli", "serve", "--port", str(port),
                  "--config", str(config)], f"http://127.0.0.1:{port}/health", log, env=env,
                 answered=lambda status: status == 200, poll_s=0.01)
    took = time.perf_counter() - began
    proc.terminate()
    proc.wait(timeout=30)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", metavar="REF", help="also run the code at this git ref")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triage-startup-"))
    try:
        with worktree(args.against, work / "against") as tree:
            trees = {"this tree": {}}
            if tree is not None:
                trees[args.against] = {"PYTHONPATH": str(tree / "src")}
            measure(trees, args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(trees: dict[str, dict[str, str]], rounds: int, work: Path) -> None:
    """Each tree's start times (its extra environment given), rounds alternating."""
    config = work / "triage.toml"
    # The upstream is never called: the gateway connects on the first request.
    config.write_text(gateway_config("http://127.0.0.1:9", work, ("fixed-a",)))
    times = {name: {"triage --help": [], "triage serve": []} for name in trees}
    for r in range(rounds):
        for name, extra in trees.items():
            times[name]["triage --help"].append(timed_help({**os.environ, **extra}))
            times[name]["triage serve"].append(timed_serve(extra, config,
                                                           work / f"serve-{r}.log"))
    for what in ("triage --help", "triage serve"):
        for name in trees:
            s = sorted(times[name][what])
            print(f"{what:>14} ({name}): {statistics.median(s):.2f} s "
                  f"(rounds {s[0]:.2f}-{s[-1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
