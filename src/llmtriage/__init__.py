"""Triage: decide, per query, which LLM answers -- by routing, cascading, or both."""

__version__ = "0.1.0"
