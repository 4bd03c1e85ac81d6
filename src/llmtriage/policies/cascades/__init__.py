"""Cascades: answer cheaply, escalate only when the answer is not trustworthy."""

from llmtriage.policies.cascades.agreement import AgreementCascade
from llmtriage.policies.cascades.calibrated import CalibratedCascade
from llmtriage.policies.cascades.routing import CascadeRouter

__all__ = ["AgreementCascade", "CalibratedCascade", "CascadeRouter"]
