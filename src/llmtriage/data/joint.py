"""Device and cloud on the same questions: one table from a local recording and a cloud one.

The local ladder's rows are measured here (``triage collect`` on a benchmark's questions:
answer, logprob confidence, latency, energy); the cloud rows are the benchmark's recorded
outcomes (quality, price-derived cost). Joined on the prompt id, they answer the question an
edge deployment asks: how much cloud spend and time does the device save, at the cloud's
quality.

Cloud latency is what a device would wait: the link's round trip plus the model's own time.
Where the source recorded no latency the model's time is a stated model,
:class:`CloudTiming` (a fixed time to the first token plus a time per output token), and
the notes say so. The round trip is folded in by :func:`over_link`, so a sweep over links
re-times one joined table instead of rebuilding it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.table import OUTCOME_COLUMNS, OutcomeTable


@dataclass(frozen=True)
class CloudTiming:
    """A cloud model's own time for one answer, where the recording has none."""

    #: Queueing, prefill and the first token, on the provider's side (ms).
    first_token_ms: float = 400.0
    #: Decode time per output token (ms); 20 ms is 50 tokens a second.
    ms_per_token: float = 20.0

    def latency_ms(self, tokens_out: np.ndarray) -> np.ndarray:
        return self.first_token_ms + self.ms_per_token * np.nan_to_num(tokens_out, nan=0.0)


def join_tiers(local: OutcomeTable, cloud: OutcomeTable,
               timing: CloudTiming | None = None, name: str | None = None) -> OutcomeTable:
    """The prompts both tables hold, with the local models first and then the cloud ones.

    Prompts, tasks and splits come from the local table (the prompt the device saw is the
    one a router reads when served). Cloud latency is recorded or modelled (``timing``),
    without the round trip (see :func:`over_link`)."""
    clash = set(local.models) & set(cloud.models)
    if clash:
        raise DataError(f"local and cloud tables both name {sorted(clash)}")
    where = {p: i for i, p in enumerate(cloud.prompt_ids)}
    keep = np.array([p in where for p in local.prompt_ids])
    if not keep.any():
        raise DataError(f"{local.name} and {cloud.name} share no prompt id")
    local_rows = np.flatnonzero(keep)
    cloud_rows = np.array([where[p] for p in local.prompt_ids[local_rows]], dtype=np.int64)
    timing = timing or CloudTiming()
    notes = [f"joined {local.name} (device, {local.n_models} models) with {cloud.name} (cloud, "
             f"{cloud.n_models} models) on {len(local_rows)} shared prompts of "
             f"{local.n_prompts} recorded on the device"]
    cloud_latency = cloud.latency_ms[cloud_rows]
    if not np.isfinite(cloud_latency).any():
        cloud_latency = timing.latency_ms(cloud.tokens_out[cloud_rows])
        notes.append(f"cloud latency modelled: {timing.first_token_ms:g} ms to the first "
                     f"token + {timing.ms_per_token:g} ms per output token (+ the link's "
                     "round trip)")

    def both(column: str) -> np.ndarray:
        right = cloud_latency if column == "latency_ms" else getattr(cloud, column)[cloud_rows]
        return np.hstack([getattr(local, column)[local_rows], right])

    responses = None
    if local.responses is not None and cloud.responses is not None:
        responses = np.hstack([local.responses[local_rows], cloud.responses[cloud_rows]])
    return OutcomeTable.build(
        [*local.models, *cloud.models], local.prompt_ids[local_rows], both("quality"),
        prompts=local.prompts[local_rows], tasks=local.tasks[local_rows],
        splits=local.splits[local_rows], responses=responses,
        name=name or f"{cloud.name}+device", notes=[*notes, *local.notes, *cloud.notes],
        confidence_signal=local.confidence_signal,
        **{c: both(c) for c in OUTCOME_COLUMNS})


def cloud_models(table: OutcomeTable, device: tuple[str, ...]) -> np.ndarray:
    """Per model of the table: whether it is reached over the link (not on the device)."""
    return np.array([m not in device for m in table.models])


def over_link(table: OutcomeTable, cloud: np.ndarray, rtt_ms: float,
              usd_per_mb: float = 0.0) -> OutcomeTable:
    """The table as a device sees it over a link with this round trip and this price per
    megabyte carried (a metered mobile link): each cloud answer arrives ``rtt_ms`` later
    and costs its prompt's and answer's bytes more (the answer's at four bytes a token).
    Policies fitted on it weigh the link like any other cost."""
    if rtt_ms < 0 or usd_per_mb < 0:
        raise DataError(f"a link's round trip and price must be >= 0, not {rtt_ms} ms and "
                        f"{usd_per_mb} USD/MB")
    latency = table.latency_ms.copy(order="F")
    latency[:, cloud] += rtt_ms
    cost = table.cost_usd.copy(order="F")
    if usd_per_mb:
        sent = np.array([len(str(p).encode()) for p in table.prompts], dtype=np.float64)
        carried = sent[:, None] + 4 * np.nan_to_num(table.tokens_out[:, cloud])
        cost[:, cloud] += carried / 1e6 * usd_per_mb
    return replace(table, latency_ms=latency, cost_usd=cost,
                   notes=(*table.notes, f"link: round trip {rtt_ms:g} ms, "
                                        f"{usd_per_mb:g} USD per MB"))
