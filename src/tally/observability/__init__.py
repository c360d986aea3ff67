"""Logs, metrics and query timing: cross-cutting, wrapped around ports and requests."""
