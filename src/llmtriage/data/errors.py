"""Errors raised where data enters Triage; the CLI turns them into one clear line."""


class DataError(ValueError):
    """A data file or argument is malformed; the message names what and where."""
