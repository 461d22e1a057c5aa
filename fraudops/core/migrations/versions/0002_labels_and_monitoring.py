"""Labels (chargebacks, analyst decisions), monitor runs, per-feature drift, alerts.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labels",
        sa.Column("transaction_id", sa.String(128), primary_key=True),
        sa.Column("is_fraud", sa.SmallInteger, nullable=False),
        sa.Column("label_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("labelled_by", sa.String(128), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "monitor_runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("reference_run_id", sa.String(64), nullable=False),
        sa.Column("window_predictions", sa.Integer, nullable=False),
        sa.Column("predictions", sa.Integer, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
        sa.Column("frauds", sa.Integer, nullable=False),
        *(
            sa.Column(name, sa.Float)
            for name in (
                "approve_share",
                "review_share",
                "block_share",
                "latency_p50_ms",
                "latency_p95_ms",
                "latency_p99_ms",
                "degraded_share",
            )
        ),
        sa.Column("features_checked", sa.Integer, nullable=False),
        sa.Column("drifted_features", sa.Integer),
        *(
            sa.Column(name, sa.Float)
            for name in (
                "drift_share",
                "score_drift",
                "decision_drift",
                "roc_auc",
                "average_precision",
                "precision_at_block",
                "recall_at_block",
            )
        ),
        sa.Column("drift_report_path", sa.String(1024)),
        sa.Column("quality_report_path", sa.String(1024)),
        sa.Column("alerts", sa.Integer, nullable=False),
    )
    op.create_index("ix_monitor_runs_window_end", "monitor_runs", ["window_end"])
    op.create_index("ix_monitor_runs_model_version", "monitor_runs", ["model_version"])
    op.create_table(
        "feature_drift",
        sa.Column(
            "run_id",
            sa.String(36),
            sa.ForeignKey("monitor_runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("feature", sa.String(128), primary_key=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("counted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_feature_drift_window_end", "feature_drift", ["window_end"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(32)),
        sa.Column("run_id", sa.String(36)),
        sa.Column("acknowledged", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("acknowledged_by", sa.String(128)),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    )
    for column in ("created_at", "run_id", "acknowledged"):
        op.create_index(f"ix_alerts_{column}", "alerts", [column])


def downgrade() -> None:
    for table in ("alerts", "feature_drift", "monitor_runs", "labels"):
        op.drop_table(table)
