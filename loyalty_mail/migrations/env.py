"""Alembic environment: runs on the connection loyalty_mail.db hands it."""

from alembic import context

from loyalty_mail.models import SQLModel

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
context.run_migrations()
