"""Batch jobs: resumable, idempotent runs per period (statements, reconciliation, expiry, key purge)."""
