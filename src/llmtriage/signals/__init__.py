"""Signals: scores of queries and answers that policies use (confidence, later embeddings)."""
