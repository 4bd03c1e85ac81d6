"""The gateway's key lookup: microseconds per ``KeyRing.identify`` with 1, 100 and 10,000
client keys configured (the key matched is the last one listed).

    python bench/key_ring.py
"""

from __future__ import annotations

import functools
import secrets
import timeit

from llmtriage.serving.config import ClientKey
from llmtriage.serving.guard import KeyRing, key_hash


def main() -> None:
    for n in (1, 100, 10_000):
        raw = [f"sk-{secrets.token_hex(16)}" for _ in range(n)]
        ring = KeyRing([ClientKey(name=f"k{i}", sha256=key_hash(k)) for i, k in enumerate(raw)])
        header = f"Bearer {raw[-1]}"
        identify = functools.partial(ring.identify, header)
        seconds = timeit.timeit(identify, number=2000) / 2000
        print(f"{n:>6} keys: {seconds * 1e6:8.1f} us per identify")


if __name__ == "__main__":
    main()
