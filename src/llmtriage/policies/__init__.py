"""Policies: who answers each query. Baselines here; routers and cascades in subpackages."""

from llmtriage.policies.base import LAST, STOP, Decision, Policy, State, Trace
from llmtriage.policies.baselines import Oracle, RandomMix, SingleModel, ThresholdCascade
from llmtriage.policies.loop import Episode, PolicyError, arun_policy, run_policy

__all__ = [
    "LAST", "STOP", "Decision", "Episode", "Oracle", "Policy", "PolicyError", "RandomMix",
    "SingleModel", "State", "ThresholdCascade", "Trace", "arun_policy", "run_policy",
]
