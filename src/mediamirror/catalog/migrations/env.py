"""Alembic environment: runs on the connection handed in by Catalog.migrate()."""

from alembic import context

import mediamirror.jobs.model
import mediamirror.notify.model
import mediamirror.web.models  # noqa: F401  (service tables in the metadata)
from mediamirror.catalog.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
