"""Job states and the retry policy (rq's vocabulary); free of database imports so the
CLI can name them without loading SQLAlchemy."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
