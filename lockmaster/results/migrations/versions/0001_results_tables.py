"""The results tables: buildsets, builds, build_known_failures.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _change_columns() -> list[sa.Column]:
    return [
        sa.Column("connection", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("change", sa.Integer, nullable=False),
        sa.Column("patchset", sa.Integer, nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(64)),
    ]


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "buildsets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("uuid", sa.String(255), nullable=False, unique=True),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255)),
        *_change_columns(),
        sa.Column("change_url", sa.String(1024)),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("start_time", when),
        sa.Column("end_time", when),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("changes_key", sa.Text, nullable=False),
        sa.Column("restarted_behind", sa.Integer, nullable=False),
        sa.Column("recorded_at", when, nullable=False),
    )
    op.create_index("ix_buildsets_project_change", "buildsets", ["project", "change", "patchset"])
    op.create_index("ix_buildsets_pipeline_end", "buildsets", ["pipeline", "end_time"])
    op.create_index("ix_buildsets_end_time", "buildsets", ["end_time"])
    op.create_index("ix_buildsets_queue_end", "buildsets", ["pipeline", "queue", "end_time"])

    op.create_table(
        "builds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("uuid", sa.String(255), nullable=False, unique=True),
        sa.Column("buildset_uuid", sa.String(255), nullable=False),
        sa.Column("buildset_try", sa.Integer, nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255)),
        *_change_columns(),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("voting", sa.Boolean, nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("start_time", when),
        sa.Column("end_time", when),
        sa.Column("duration", sa.Float),
        sa.Column("node_provider", sa.String(255)),
        sa.Column("node_label", sa.String(255)),
        sa.Column("node_name", sa.String(255)),
        sa.Column("log_url", sa.String(2048)),
        sa.Column("message", sa.Text),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("changes_key", sa.Text, nullable=False),
        sa.Column("recorded_at", when, nullable=False),
    )
    op.create_index("ix_builds_buildset_uuid", "builds", ["buildset_uuid"])
    op.create_index("ix_builds_end_time", "builds", ["end_time"])
    op.create_index("ix_builds_project_end", "builds", ["project", "end_time"])
    op.create_index("ix_builds_job_end", "builds", ["job", "end_time"])
    op.create_index("ix_builds_pipeline_end", "builds", ["pipeline", "end_time"])
    op.create_index("ix_builds_result_end", "builds", ["result", "end_time"])
    op.create_index("ix_builds_change", "builds", ["change", "patchset"])
    op.create_index("ix_builds_estimate", "builds",
                    ["job", "project", "pipeline", "result", "end_time"])

    op.create_table(
        "build_known_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("build_uuid", sa.String(255), nullable=False),
        sa.Column("signature", sa.String(255), nullable=False),
        sa.Column("bug", sa.String(2048), nullable=False),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("end_time", when),
    )
    op.create_index("ix_build_known_failures_build_uuid", "build_known_failures",
                    ["build_uuid"])
    op.create_index("ix_known_failures_signature", "build_known_failures",
                    ["signature", "end_time"])
    op.create_index("uq_known_failures_build_signature", "build_known_failures",
                    ["build_uuid", "signature"], unique=True)


def downgrade() -> None:
    op.drop_table("build_known_failures")
    op.drop_table("builds")
    op.drop_table("buildsets")
