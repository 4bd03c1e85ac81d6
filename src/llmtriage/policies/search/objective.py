"""What a policy search optimises, and which settings qualify for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.table import OutcomeTable

if TYPE_CHECKING:
    from llmtriage.policies.search.crossval import CrossValidated

#: What a quality objective may minimise.
RESOURCES = {"cost": "cost_usd", "latency": "latency_ms", "energy": "energy_j"}
OUTCOMES = ("quality", "cost_usd", "latency_ms", "energy_j")


@dataclass(frozen=True)
class Objective:
    """What the search optimises, written ``kind=value[,key=value...]``:

    - ``lam=X``: the most quality minus X times the cost per query (X: quality per USD);
    - ``budget=X``: the most quality at a mean cost per query of at most X USD;
    - ``latency=X``: the most quality at a mean latency of at most X ms;
    - ``quality=X``: the least mean cost (``minimize=latency`` or ``energy``: that) at a
      mean quality of at least X; with ``delta=D``, certified so with probability 1 - D;
    - ``match=X``: as ``quality``, with the target the best single model's quality minus X
      (``match=0`` asks for its quality; ``match=0.01`` allows one point less).
    """

    kind: str
    value: float
    minimize: str = "cost"
    delta: float | None = None

    KINDS = ("lam", "budget", "latency", "quality", "match")

    @classmethod
    def parse(cls, text: str) -> Objective:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        pairs: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise DataError(f"objective {text!r}: write key=value, e.g. budget=0.001 or "
                                "quality=0.8,delta=0.1")
            if key.strip() in pairs:
                raise DataError(f"objective {text!r}: {key.strip()} is given twice")
            pairs[key.strip()] = value.strip()
        kinds = [k for k in pairs if k in cls.KINDS]
        if len(kinds) != 1:
            raise DataError(f"objective {text!r}: name exactly one of {', '.join(cls.KINDS)}")
        unknown = set(pairs) - {*cls.KINDS, "minimize", "delta"}
        if unknown:
            raise DataError(f"objective {text!r}: unknown key(s) {sorted(unknown)}")
        try:
            value = float(pairs[kinds[0]])
            delta = float(pairs["delta"]) if "delta" in pairs else None
        except ValueError:
            raise DataError(f"objective {text!r}: values must be numbers") from None
        minimize = pairs.get("minimize", "cost")
        if minimize not in RESOURCES:
            raise DataError(f"objective {text!r}: minimize one of {', '.join(RESOURCES)}")
        if "minimize" in pairs and kinds[0] not in ("quality", "match"):
            raise DataError(f"objective {text!r}: minimize goes with a quality target "
                            f"(quality= or match=); {kinds[0]} sets what is held fixed")
        if delta is not None and not (0.0 < delta < 1.0 and kinds[0] in ("quality", "match")):
            raise DataError(f"objective {text!r}: delta is a probability in (0, 1) that "
                            "goes with a quality target")
        if not np.isfinite(value) or value < 0:
            raise DataError(f"objective {text!r}: {kinds[0]} must be a number >= 0")
        if kinds[0] == "latency" and value == 0:
            raise DataError(f"objective {text!r}: no answer comes in 0 ms; give a mean "
                            "latency budget above 0")
        if kinds[0] in ("quality", "match") and value > 1:
            raise DataError(f"objective {text!r}: {kinds[0]} is a share of answers right, "
                            "0 to 1")
        return cls(kinds[0], value, minimize, delta)

    def __str__(self) -> str:
        extra = (f",minimize={self.minimize}" if self.minimize != "cost" else "") + (
            f",delta={self.delta:g}" if self.delta is not None else "")
        return f"{self.kind}={self.value:g}{extra}"

    def check(self, table: OutcomeTable) -> None:
        """Refuse a table that lacks the measurement this objective is about."""
        needed = {"latency": "latency_ms", "quality": RESOURCES[self.minimize],
                  "match": RESOURCES[self.minimize]}.get(self.kind, "cost_usd")
        if not table.has(needed):
            raise DataError(f"{table.name} records no {needed}, which objective {self} needs")

    def choose(self, outcomes: CrossValidated) -> tuple[int, bool]:
        """(index of the chosen setting, whether it meets the objective)."""
        return self.pick(outcomes, self.qualifies(outcomes))

    def qualifies(self, outcomes: CrossValidated) -> np.ndarray:
        """Which settings meet the objective's constraint (all, for ``lam``)."""
        q = outcomes.mean("quality")
        if self.kind == "lam":
            return np.ones(len(q), dtype=bool)
        if self.kind in ("budget", "latency"):
            return outcomes.mean("cost_usd" if self.kind == "budget" else "latency_ms") \
                <= self.value
        target = self.target(outcomes)
        return q >= target - 1e-12 if self.delta is None else self.certified(outcomes, target)

    def pick(self, outcomes: CrossValidated, ok: np.ndarray) -> tuple[int, bool]:
        """The best of the qualifying settings; without any, the closest to qualifying."""
        q = outcomes.mean("quality")
        if self.kind == "lam":
            return int(np.argmax(q - self.value * outcomes.mean("cost_usd"))), True
        if self.kind in ("budget", "latency"):
            spent = outcomes.mean("cost_usd" if self.kind == "budget" else "latency_ms")
            if not ok.any():
                return int(np.argmin(spent)), False
            return _best(np.where(ok, q, -np.inf), -spent), True
        if not ok.any():
            return int(np.argmax(q)), False
        return _best(np.where(ok, -outcomes.mean(RESOURCES[self.minimize]), -np.inf), q), True

    def target(self, outcomes: CrossValidated) -> float:
        """The quality a ``quality`` or ``match`` objective asks for."""
        if self.kind != "match":
            return self.value
        singles = [r for r, f in enumerate(outcomes.families) if f == "single"]
        if not singles:
            raise DataError("match=X is relative to the best single model: search 'single'")
        return float(outcomes.mean("quality")[singles].max()) - self.value

    def certified(self, outcomes: CrossValidated, target: float) -> np.ndarray:
        """Settings whose quality is at least ``target`` with probability ``1 - delta``.

        Learn-Then-Test with fixed-sequence testing: each candidate's settings are tested
        from the dearest (the most cautious) to the cheapest and certified until the first
        that fails, so a candidate's whole sweep costs one test's error budget; the budget
        is split evenly over the candidates (Bonferroni). The test is an exact binomial one
        on right/wrong outcomes, Hoeffding's bound on graded ones."""
        q = outcomes.values["quality"]
        n = q.shape[1]
        groups: dict[int, list[int]] = {}
        for row, (index, _) in enumerate(outcomes.settings):
            groups.setdefault(index, []).append(row)
        level = float(self.delta) / len(groups)
        if np.isin(q, (0.0, 1.0)).all():
            from scipy.stats import binom  # 0.3 s to import: only when a guarantee is asked

            errors = (q < 0.5).sum(axis=1)
            passes = binom.cdf(errors, n, 1.0 - target) <= level
        else:
            passes = q.mean(axis=1) - np.sqrt(np.log(1.0 / level) / (2 * n)) >= target
        spent = outcomes.mean(RESOURCES[self.minimize])
        ok = np.zeros(len(q), dtype=bool)
        for rows in groups.values():
            for row in sorted(rows, key=lambda r: -spent[r]):
                if not passes[row]:
                    break
                ok[row] = True
        return ok


def _best(primary: np.ndarray, tiebreak: np.ndarray) -> int:
    return int(np.lexsort((-tiebreak, -primary))[0])
