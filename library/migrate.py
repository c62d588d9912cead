"""Brings a library's schema to the newest Alembic revision; runs whenever a library is opened."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from vlsearch import migrations


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser treats % as interpolation; the URL is only used by the stand-alone alembic command line.
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Apply pending migrations; returns (revision before, revision after)."""
    before = current_revision(engine)
    cfg = alembic_config(engine)
    if before != head_revision(engine):
        with engine.connect() as conn:
            # All or nothing: Python's sqlite3 commits each CREATE/DROP on its own outside a transaction it opened,
            # so a crash mid-migration left a half-migrated schema at the old revision that every later open
            # failed on ("table captions already exists"). SQLite's DDL is transactional once we issue BEGIN
            # ourselves; IMMEDIATE also makes a second process opening the library wait, then find it migrated.
            conn.execution_options(isolation_level="AUTOCOMMIT")  # the driver stops managing transactions
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            except BaseException:
                if conn.connection.driver_connection.in_transaction:
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
    return before, current_revision(engine)
