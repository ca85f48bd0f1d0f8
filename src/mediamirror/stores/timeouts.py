"""How long and how often a network store tries before an operation fails.

A value object handed to every S3 client: a stalled endpoint must fail a request after
``read`` seconds (and be retried) instead of hanging a sync or a job forever, and a 500,
503 or reset connection is retried ``max_attempts`` times before it becomes one clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mediamirror.config import Settings


@dataclass(frozen=True)
class StoreTimeouts:
    """Connect and read timeouts (seconds) and attempts per request."""

    connect: float = 5.0
    read: float = 60.0
    max_attempts: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreTimeouts:
        return cls(
            connect=float(settings.store_connect_timeout),
            read=float(settings.store_read_timeout),
            max_attempts=settings.store_max_attempts,
        )
