"""Adapters of the database ports: SQLAlchemy Core on SQLite (default) and PostgreSQL."""
