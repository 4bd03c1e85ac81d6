"""Cascades: answer cheaply, escalate only when the answer is not trustworthy."""

from llmtriage.policies.cascades.calibrated import CalibratedCascade

__all__ = ["CalibratedCascade"]
