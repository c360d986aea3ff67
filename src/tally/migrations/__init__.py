"""Alembic's script directory for Tally, inside the package so an installed Tally can migrate (ADR 0031).

``versions/0000_baseline.py`` is the root; ``versions/expand/`` (additive) and ``versions/contract/``
(removals) are the two branches. ``operations.py`` and ``balance_triggers.py`` are what revisions call.
"""
