"""The default live cascade over a catalog's ladder, shared by `triage ask` and the gateway.

Models are tried in catalog order; an answer is accepted when its least likely token has at
least ``threshold`` logprob (the last model's answer always is). Uncalibrated, so the
threshold is a raw logprob: a calibrated cascade needs outcomes to fit on (see
:class:`CalibratedCascade`, and the gateway's ``calibrated-cascade`` policies).
"""

from __future__ import annotations

DEFAULT_THRESHOLD = -0.5
