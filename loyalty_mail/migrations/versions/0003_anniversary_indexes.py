"""expression indexes on the month and day of joined_on and birthday (anniversary segments)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

The expressions are exactly those segments/compiler.py's month_day_key() writes, so that the
database can answer "anniversary today" from the index instead of reading every member.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("joined_on", "birthday")


def _expression(column: str, dialect: str) -> str:
    if dialect == "sqlite":
        return f"CAST(strftime('%m%d', {column}) AS INTEGER)"
    return f"(EXTRACT(month FROM {column}) * 100 + EXTRACT(day FROM {column}))"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for column in COLUMNS:
        op.execute(f"CREATE INDEX ix_members_{column}_month_day ON members ({_expression(column, dialect)})")


def downgrade() -> None:
    for column in COLUMNS:
        op.execute(f"DROP INDEX ix_members_{column}_month_day")
