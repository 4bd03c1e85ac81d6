"""Where answers come from: recorded tables (replay) or live models."""

from llmtriage.backends.base import Queries, StepResult
from llmtriage.backends.replay import ReplayBackend

__all__ = ["Queries", "ReplayBackend", "StepResult"]
