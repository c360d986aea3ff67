"""Tally: a double-entry ledger service."""

__version__ = "0.1.0"
