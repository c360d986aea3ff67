"""Observability: logs, metrics, alert rules, dashboards."""
