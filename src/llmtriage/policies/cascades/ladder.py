"""The default live cascade over a catalog's ladder, shared by `triage ask` and the gateway.

Models are tried in catalog order; an answer is accepted when its least likely token has at
least ``threshold`` logprob (the last model's answer always is). Uncalibrated, so the
threshold is a raw logprob: a calibrated cascade needs outcomes to fit on (see
:class:`CalibratedCascade`).
"""

from __future__ import annotations

from llmtriage.backends.catalog import Catalog
from llmtriage.backends.live import Completion
from llmtriage.backends.pool import ModelPool, RequestFor, plain_request
from llmtriage.policies.baselines import ThresholdCascade
from llmtriage.signals.logprob import logprob_stats

DEFAULT_THRESHOLD = -0.5


def min_logprob(completion: Completion) -> float:
    return logprob_stats(completion.logprobs).min


def ladder_cascade(catalog: Catalog, threshold: float = DEFAULT_THRESHOLD,
                   request_for: RequestFor = plain_request) -> tuple[ModelPool, ThresholdCascade]:
    pool = ModelPool(catalog, request_for=request_for, confidence=min_logprob)
    return pool, ThresholdCascade(catalog.names(), threshold=threshold)
