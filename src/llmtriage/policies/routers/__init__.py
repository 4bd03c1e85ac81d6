"""Learned routers: predict per-model quality for a query, pick one model."""

from llmtriage.policies.routers.bandit import LinUCBRouter
from llmtriage.policies.routers.base import QualityRouter
from llmtriage.policies.routers.classifier import ClassifierRouter
from llmtriage.policies.routers.elo import EloRouter
from llmtriage.policies.routers.knn import KNNRouter
from llmtriage.policies.routers.mf import MFRouter
from llmtriage.policies.routers.task import TaskRouter

__all__ = [
    "ClassifierRouter", "EloRouter", "KNNRouter", "LinUCBRouter", "MFRouter", "QualityRouter",
    "TaskRouter",
]
