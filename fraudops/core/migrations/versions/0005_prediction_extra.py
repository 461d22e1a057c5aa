"""Predictions keep the request fields the contract does not use (``extra``, JSON).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("extra", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("predictions", "extra")
