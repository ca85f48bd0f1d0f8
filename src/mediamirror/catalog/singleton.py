"""Roles that one process at a time plays across every process on a catalog.

``serve`` may run as several processes (``serve --workers N``, or ``serve`` on several
machines) on one PostgreSQL catalog. The API, the push endpoints and the job workers run
in each of them; the scheduler and the SQS consumer must run in exactly one. Each such
role is a named lease (:mod:`mediamirror.catalog.leases`): every process keeps trying to
take it, the holder renews it, and when the holder dies another process takes it over:
at its next attempt when the holder ran on the same machine (its PID is gone), else once
the lease has expired (``ttl`` seconds after the holder's last renewal).

The holder counts its lease as held a safety margin less than the catalog does, so two
processes never both believe they hold it, even when renewals stall.
"""

from __future__ import annotations

import logging
import threading
import time

from mediamirror.catalog import leases
from mediamirror.catalog.db import Catalog
from mediamirror.errors import ConflictError

log = logging.getLogger(__name__)

#: How long a role's lease lasts without a renewal (a holder on another machine that died
#: is replaced after at most this long).
TTL_SECONDS = 30.0
#: How often the holder renews and the others try to take the role.
INTERVAL_SECONDS = 2.0
#: The part of the lease the holder trusts: it stops acting before the lease expires.
_TRUSTED = 0.8


class Singleton:
    """Keeps trying to hold the lease ``name``; :meth:`held` says whether this process
    plays the role now. Start :attr:`thread`, set :attr:`stop` to end it (the lease is
    then released, so another process takes the role over at once)."""

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        *,
        ttl: float = TTL_SECONDS,
        interval: float = INTERVAL_SECONDS,
        stop: threading.Event | None = None,
    ) -> None:
        self.catalog = catalog
        self.name = name
        self.ttl = ttl
        self.interval = interval
        self.owner = leases.new_owner()
        self.stop = stop if stop is not None else threading.Event()
        self._held_until = 0.0
        self._changed = threading.Condition()
        self.thread = threading.Thread(
            target=self._run, name=f"mediamirror-lease-{name}", daemon=True
        )

    def held(self) -> bool:
        """True while this process holds the role (with the safety margin)."""
        return time.monotonic() < self._held_until

    def wait_held(self, timeout: float | None = None) -> bool:
        """Wait until this process holds the role, ``stop`` is set or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self.held() and not self.stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(min(self.interval, left) if left is not None else self.interval)
        return self.held()

    def attempt(self) -> bool:
        """Take or renew the lease once; returns whether this process holds the role."""
        was_held = self.held()
        started = time.monotonic()
        try:
            leases.acquire(self.catalog, self.name, self.owner, self.ttl)
        except ConflictError as exc:
            if was_held:
                log.warning("%s: another process took the role over (%s)", self.name, exc)
            self._set(0.0)
            return False
        except Exception as exc:  # the catalog cannot be reached: trust what was renewed
            log.warning("%s: cannot renew the lease: %s", self.name, exc)
            return self.held()
        if not was_held:
            log.info("%s: this process (%s) runs it", self.name, self.owner.split(":")[1])
        self._set(started + self.ttl * _TRUSTED)
        return True

    def release(self) -> None:
        """Give the role up (another process may take it at once)."""
        had = self._held_until > 0  # held at the last attempt, even if not trusted now
        self._set(0.0)
        if not had:
            return
        try:
            leases.release(self.catalog, self.name, self.owner)
        except Exception:
            log.warning("%s: could not release the lease", self.name, exc_info=True)

    def _set(self, until: float) -> None:
        with self._changed:
            self._held_until = until
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while True:
                self.attempt()
                if self.stop.wait(self.interval):
                    break
        finally:
            self.release()
