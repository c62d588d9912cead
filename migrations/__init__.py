"""Alembic environment and revisions of the library schema (applied by vlsearch.library.migrate)."""
