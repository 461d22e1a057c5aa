"""Shadow predictions: the @challenger's results on the champion's transactions.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_predictions",
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("fraud_probability", sa.Float, nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )
    for column in ("transaction_id", "scored_at"):
        op.create_index(f"ix_shadow_predictions_{column}", "shadow_predictions", [column])


def downgrade() -> None:
    op.drop_table("shadow_predictions")
