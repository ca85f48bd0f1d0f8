"""Push endpoints for bucket notifications, the events log, and the background consumers.

``POST /api/v1/bucket_notifications/s3`` takes S3 event JSON, MinIO webhook bodies, SNS
envelopes and Amazon EventBridge events (told apart by their shape; ``/minio``, ``/sns``
and ``/eventbridge`` are the same endpoint under names that read well in a bucket's or an
API destination's configuration). ``POST
/api/v1/bucket_notifications/gcs`` takes Google Cloud Storage notifications from a
Pub/Sub push subscription. Each needs the push token of a source (``?token=``,
``X-Mediamirror-Token`` or ``Authorization: Bearer``). Events are recorded before the
answer and applied right after by the events applier (:mod:`mediamirror.events.inbox`):
200 means every event is durably recorded (``recorded`` in the answer, ``pending`` in the
events log until applied); 400, 401 and 413 mean the delivery was refused. Every accepted
delivery is recorded in ``events``; refused ones are counted in ``push_refusals`` per
source, channel and reason (anyone can send them: one row each would let them grow the
catalog without a token).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from mediamirror.catalog.singleton import Singleton
from mediamirror.errors import MediamirrorError
from mediamirror.events import eventbridge, gcs, inbox, record, s3, sns
from mediamirror.events.apply import EventApplier, Result, applier_for
from mediamirror.events.model import EventRejected, ObjectEvent, Outcome
from mediamirror.events.routing import PUSH_PREFIX, Route, digest, holds_token
from mediamirror.services import Services
from mediamirror.web.deps import Offset, Svc, Viewer

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)
TOKEN_HEADER = "x-mediamirror-token"
S3_PATHS = ("s3", "minio", "sns", "eventbridge")
SQS_LEASE = "sqs-consumer"
#: What the answer says of an event recorded and not applied yet.
RECORDED = "recorded"


# -- reading a delivery ------------------------------------------------------------------------


def _presented_tokens(request: Request) -> list[str]:
    found = [request.headers.get(TOKEN_HEADER, ""), request.query_params.get("token", "")]
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip().startswith(PUSH_PREFIX):
        # Pub/Sub push may send its own OIDC bearer token: only ours is looked at.
        found.append(auth[7:].strip())
    return [t.strip() for t in found if t.strip()]


class Sender:
    """The source a delivery's token names, found in the source table (which may be a
    few seconds old). Whether the token is still the source's is asked of the catalog
    before anything is done for it: in the transaction that records the delivery
    (:meth:`check`), or on its own (:meth:`confirmed`) when nothing is recorded."""

    def __init__(self, applier: EventApplier, route: Route, hashed: str) -> None:
        self.applier = applier
        self.route = route
        self.hashed = hashed

    def check(self, conn: Connection) -> None:
        if not holds_token(conn, self.route.id, self.hashed):
            raise TokenReplaced("invalid push token", 401)

    def confirmed(self) -> bool:
        with self.applier.catalog.read() as conn:
            held = holds_token(conn, self.route.id, self.hashed)
        if not held:
            self.applier.sources.forget()
        return held

    def confirm(self) -> None:
        if not self.confirmed():
            raise TokenReplaced("invalid push token", 401)


class TokenReplaced(EventRejected):
    """The token was the source's a moment ago (the source table says so) and no longer is."""


def _sender(applier: EventApplier, request: Request, *, confirm: bool = False) -> Sender:
    presented = _presented_tokens(request)
    if not presented:
        raise EventRejected(
            "a push token is required (?token=, X-Mediamirror-Token or Authorization: Bearer)",
            401,
        )
    for token in presented:
        route = applier.sources.by_token(token, confirm=confirm)
        if route is not None:
            return Sender(applier, route, digest(token))
    raise EventRejected("invalid push token", 401)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise EventRejected(f"the body is larger than {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise EventRejected(f"the body is larger than {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    if not raw.strip():
        raise EventRejected("the body is empty")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise EventRejected("the body is not valid JSON") from None
    except RecursionError:  # e.g. 100,000 nested "[": the parser's depth is bounded
        raise EventRejected("the body is not valid JSON: nested too deeply") from None


def _answer(results: list[Result]) -> JSONResponse:
    """200 once recorded: a pending event is ``recorded`` (the events log gives its
    outcome once applied)."""
    rows = [r.as_dict() for r in results]
    for row in rows:
        if row["outcome"] == Outcome.PENDING.value:
            row["outcome"] = RECORDED
    counts = Counter(row["outcome"] for row in rows)
    body = {"received": len(results), "outcomes": dict(counts), "results": rows}
    return JSONResponse(body, status_code=200)


def _refuse(exc: EventRejected) -> JSONResponse:
    return JSONResponse({"error": str(exc), "status": exc.status}, status_code=exc.status)


Handler = Callable[[EventApplier, Sender, Any], list[Result]]


async def _push(request: Request, svc: Services, channel: str, handle: Handler) -> JSONResponse:
    """Read a delivery (bounded), then authenticate, parse and apply it in one worker
    thread; a refusal is recorded there too."""
    applier = applier_for(svc)
    try:
        raw = await _read_body(request, svc.settings.events_max_body_bytes)
    except EventRejected as exc:
        await run_in_threadpool(_record_refusal, applier, request, channel, exc)
        return _refuse(exc)
    return await run_in_threadpool(_process, applier, request, channel, raw, handle)


def _process(
    applier: EventApplier, request: Request, channel: str, raw: bytes, handle: Handler
) -> JSONResponse:
    sender: Sender | None = None
    try:
        sender = _sender(applier, request)
        results = handle(applier, sender, _json(raw))
    except RecursionError:  # JSON nested inside the body (an SNS Message, GCS data)
        exc = EventRejected("the body holds JSON nested too deeply")
        return _refused(applier, sender, channel, exc)
    except EventRejected as exc:
        return _refused(applier, sender, channel, exc)
    return _answer(results)


def _refused(
    applier: EventApplier, sender: Sender | None, channel: str, exc: EventRejected
) -> JSONResponse:
    """Refuse a delivery; one whose token was replaced is refused for that, whatever
    else was wrong with it (as if the token had been checked first)."""
    if isinstance(exc, TokenReplaced):
        applier.sources.forget()
        sender = None
    elif sender is not None and not sender.confirmed():
        sender, exc = None, TokenReplaced("invalid push token", 401)
    _count_refusal(applier, sender, channel, exc)
    return _refuse(exc)


def _record_refusal(
    applier: EventApplier, request: Request, channel: str, exc: EventRejected
) -> None:
    """An oversized body: still say which source it claimed to come from, if it did."""
    try:
        sender: Sender | None = _sender(applier, request, confirm=True)
    except EventRejected:
        sender = None
    _count_refusal(applier, sender, channel, exc)


def _count_refusal(
    applier: EventApplier, sender: Sender | None, channel: str, exc: EventRejected
) -> None:
    reason = record.refusal_reason(exc.status, authenticated=sender is not None)
    record.record_refusal(
        applier.catalog, channel, reason, str(exc), source_id=sender.route.id if sender else None
    )


# -- S3, MinIO and SNS -------------------------------------------------------------------------


def _routes_of(applier: EventApplier, route: Route) -> Callable[[bool], list[Route]]:
    return lambda fresh: applier.sources.siblings(route, fresh=fresh)


def _record(applier: EventApplier, sender: Sender, events: list[ObjectEvent]) -> list[Result]:
    """Record the events, the token checked in the same transaction."""
    route = sender.route
    return inbox.record(applier, events, _routes_of(applier, route), route, check=sender.check)


def _handle_s3(applier: EventApplier, sender: Sender, doc: Any) -> list[Result]:
    if sns.is_envelope(doc):
        # The token first, as ever: no certificate is fetched, no subscription confirmed
        # for a replaced one.
        sender.confirm()
        applier.verifier.verify(doc)
        kind = doc["Type"]
        if kind == "SubscriptionConfirmation":
            topic = applier.verifier.confirm(doc)
            ev = sns.control_event(doc)
            source = sender.route.source
            results = [Result(ev, Outcome.CONFIRMED, source, f"subscribed to {topic}")]
            record.record(applier.catalog, results)
            return results
        if kind == "UnsubscribeConfirmation":
            ev = sns.control_event(doc)
            results = [Result(ev, Outcome.IGNORED, sender.route.source, "unsubscribed")]
            record.record(applier.catalog, results)
            return results
        events = sns.unwrap(doc, "sns")
    elif eventbridge.is_event(doc):  # an EventBridge API destination
        events = eventbridge.parse(doc)
    else:
        channel = "minio" if isinstance(doc, dict) and "EventName" in doc else "s3"
        events = s3.parse(doc, channel)
    return _record(applier, sender, events)


def _s3_endpoint(name: str) -> Callable[..., Any]:
    async def receive(request: Request, svc: Svc) -> JSONResponse:
        return await _push(request, svc, name, _handle_s3)

    receive.__name__ = f"bucket_notifications_{name}"
    receive.__doc__ = (
        "S3 event notifications: AWS S3 or any S3-compatible store, MinIO webhook bodies, "
        "SNS HTTP(S) subscriptions (signature checked, subscription confirmed), Amazon "
        "EventBridge events (an API destination). Needs the source's push token."
    )
    return receive


for _name in S3_PATHS:
    router.add_api_route(
        f"/bucket_notifications/{_name}", _s3_endpoint(_name), methods=["POST"], name=_name
    )


@router.head("/bucket_notifications/{name}", include_in_schema=False)
def liveness(name: str) -> Response:
    """MinIO checks that a webhook target is up with a HEAD request."""
    return Response(status_code=200 if name in (*S3_PATHS, "gcs") else 404)


# -- Google Cloud Storage ----------------------------------------------------------------------


def _handle_gcs(applier: EventApplier, sender: Sender, doc: Any) -> list[Result]:
    events: list[ObjectEvent] = gcs.parse(doc)
    return _record(applier, sender, events)


@router.post("/bucket_notifications/gcs")
async def bucket_notifications_gcs(request: Request, svc: Svc) -> JSONResponse:
    """Google Cloud Storage notifications (Pub/Sub push): OBJECT_FINALIZE, OBJECT_DELETE,
    OBJECT_METADATA_UPDATE, OBJECT_ARCHIVE. Needs the source's push token."""
    return await _push(request, svc, "gcs", _handle_gcs)


# -- the events log ----------------------------------------------------------------------------


@router.get("/events")
def list_events(
    svc: Svc,
    _: Viewer,
    source: str | None = None,
    outcome: Outcome | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: Offset = 0,
) -> dict[str, Any]:
    """Received events, newest first."""
    total, rows = record.listing(
        svc.catalog,
        source=source,
        outcome=outcome.value if outcome is not None else None,
        limit=limit,
        offset=offset,
    )
    return {"total": total, "offset": offset, "limit": limit, "events": rows}


@router.get("/events/refusals")
def list_refusals(svc: Svc, _: Viewer, source: str | None = None) -> dict[str, Any]:
    """Refused push deliveries, counted per source, channel and reason (most recent
    first); each keeps its last message as a sample."""
    rows = record.refusals(svc.catalog, source=source)
    return {"total": sum(r["count"] for r in rows), "refusals": rows}


# -- background consumers ----------------------------------------------------------------------


class Consumers:
    """The events applier, SQS consumers (one thread per configured queue) and the
    applier's periodic work."""

    def __init__(self, services: Services) -> None:
        from mediamirror.events.sqs import SqsConsumer, queues

        self.services = services
        self.stop = threading.Event()
        self.applier = applier_for(services)
        self.drainer = inbox.EventsApplier(self.applier, self.stop)
        try:
            self.consumers = [SqsConsumer(self.applier, q) for q in queues(services.settings)]
        except MediamirrorError as exc:
            # The API keeps serving; the log says in one line why no queue is consumed.
            log.error("SQS consumers not started: %s", exc)
            self.consumers = []
        # One process at a time polls the queues (the lease ``sqs-consumer``): with
        # several service processes on one catalog, another takes over when it dies.
        self.role = (
            Singleton(services.catalog, SQS_LEASE, stop=self.stop) if self.consumers else None
        )
        self.thread = threading.Thread(target=self._run, name="mediamirror-events", daemon=True)

    def _run(self) -> None:
        active = self.role.held if self.role is not None else None
        pollers = [
            threading.Thread(
                target=c.run, args=(self.stop, active), name=f"mediamirror-sqs-{i}", daemon=True
            )
            for i, c in enumerate(self.consumers)
        ]
        self.drainer.start()
        if self.role is not None:
            self.role.thread.start()
        for poller in pollers:
            poller.start()
        while not self.stop.wait(0.5):
            try:
                self.applier.tick()
            except Exception:  # a catalog hiccup must not end the loop
                log.exception("events background work failed; retrying")
        # Pollers stop at the end of their current long poll; messages they received but
        # did not apply become visible again in the queue.
        if self.role is not None:
            self.role.thread.join(timeout=10)  # it releases the lease on its way out
        self.drainer.thread.join(timeout=10)  # ends its batch (committed or rolled back)
        self.drainer.role.thread.join(timeout=10)


def start_consumers(services: Services) -> Consumers:
    """Called by the app at startup: start the SQS consumers of config.yaml's ``sqs``."""
    consumers = Consumers(services)
    consumers.thread.start()
    return consumers
