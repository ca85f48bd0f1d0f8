"""The job table, its states and the retry policy (rq's vocabulary, catalog columns)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Boolean, Float, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from mediamirror.catalog.models import Base, utcnow


class JobStatus(StrEnum):
    """Every state a job can be in; written in exactly one place (jobs.queue)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELED = "canceled"

    @property
    def active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient failure is retried, and how long to wait before each retry."""

    max_attempts: int = 3
    intervals: tuple[float, ...] = (5.0, 30.0, 120.0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if not self.intervals:
            return 0.0
        return self.intervals[min(attempt, len(self.intervals)) - 1]


class Job(Base):
    """One run of one processor on one target at one input version."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "state", "run_after", "priority", "id"),
        Index("ix_jobs_target", "target_type", "target_id"),
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


JOBS = cast(Table, Job.__table__)
