"""Replay, metrics, comparisons, reports and plots."""
