"""Which catalog errors a writer may simply try again.

With several writers on one PostgreSQL catalog (syncs of different sources, push
endpoints and SQS consumers of several service processes), a transaction can fail only
because another one ran at the same moment:

- it inserted a row another transaction had just inserted (two syncs creating the same
  ancestor folder of their mounts, two processes applying the first event of a key):
  the next attempt finds the row;
- PostgreSQL chose it to break a lock cycle (``40P01``) or could not serialise it
  (``40001``): the next attempt runs after the other one committed.

The writers take their row locks in one order (an event's or a sync page's items first,
then folders), so cycles are not expected; retrying is what keeps a rare one (sidecar
groups moved by an event and a sync at once) from failing a sync or a delivery.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError

#: deadlock_detected, serialization_failure
_RETRY_STATES = {"40P01", "40001"}
#: Attempts of one transaction before its error is raised.
ATTEMPTS = 3


def transient(exc: BaseException) -> bool:
    """True when ``exc`` failed a transaction only because of a concurrent one."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return state in _RETRY_STATES
    return False
