"""The job table, its states and the retry policy (rq's vocabulary, catalog columns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Boolean, Float, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from mediamirror.catalog.models import Base, utcnow
from mediamirror.jobs.status import JobStatus, RetryPolicy

__all__ = ["JOBS", "Job", "JobStatus", "RetryPolicy"]


class Job(Base):
    """One run of one processor on one target at one input version."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "state", "run_after", "priority", "id"),
        Index("ix_jobs_target", "target_type", "target_id"),
        Index("ix_jobs_next", "state", "priority", "id"),  # celery executor's dispatch
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    processor: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(20))  # folder | item
    target_id: Mapped[int] = mapped_column(Integer)
    input_version: Mapped[str] = mapped_column(String(200))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # "processor:type:id:version" while queued or running, NULL after: at most one
    # active job per (target, processor, input version), enforced by a unique index.
    active_key: Mapped[str | None] = mapped_column(Text, unique=True)
    state: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Celery executor: when the job's id was last sent to the broker (NULL: not sent since
    # it was queued). See mediamirror.jobs.dispatch.
    dispatched_at: Mapped[datetime | None]


JOBS = cast(Table, Job.__table__)
