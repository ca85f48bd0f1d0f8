"""Batches give the catalog one-by-one application gives.

A true history of created and removed events over a few keys (videos, a sidecar, frames
of an image sequence) with increasing sequencers is applied twice, to two sources on the
same bucket (one prefix each): one event at a time in sequencer order (the reference),
and delivered duplicated, shuffled and cut into deliveries, each recorded and drained in
batches of a drawn size (the change). Hypothesis draws the history and the delivery.

What is compared is what a user and the workers see: present items (size, etag, folder),
the folders holding them with their metadata and state, and the jobs queued for them. A
key created and removed within one batch is never written at all, where one-by-one
application leaves a deleted row and an empty dataset behind (with a job for content
already gone); the items present, their datasets and their jobs are the same.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from helpers import S3Bucket
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.events import inbox
from mediamirror.events.apply import applier_for
from mediamirror.events.batch import BatchApplier
from mediamirror.events.model import Action, ObjectEvent
from mediamirror.jobs.model import JOBS

from .support import Service

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

KEYS = ["v/a.mp4", "v/a.json", "v/b.mov", "img/s/f1.png", "img/s/f2.png"]
_EXAMPLE = itertools.count()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Op:
    key: str
    created: bool
    seq: str
    time: datetime


ops = st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=12)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Op], list[Op], list[int], int]:
    history = [
        Op(key, created, f"{0x5A0000000000 + i:016X}", T0 + timedelta(seconds=i))
        for i, (key, created) in enumerate(draw(ops))
    ]
    extra = draw(st.lists(st.sampled_from(history), max_size=len(history)))
    delivered = draw(st.permutations(history + extra))
    cuts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=len(delivered)))
    limit = draw(st.integers(1, 8))
    return history, delivered, cuts, limit


def content(key: str) -> bytes:
    return f"content of {key}".encode()


def event(bucket: str, prefix: str, op: Op) -> ObjectEvent:
    key = prefix + op.key
    if not op.created:
        return ObjectEvent("s3", "ObjectRemoved:Delete", Action.REMOVED, bucket, key, op.seq)
    body = content(op.key)
    etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
    return ObjectEvent(
        "s3", "ObjectCreated:Put", Action.CREATED, bucket, key, op.seq, None,
        size=len(body), etag=etag, time=op.time,
    )  # fmt: skip


def visible(service: Service, source_id: int, prefix: str, mount: str) -> dict[str, Any]:
    """Present items, the folders holding them and their jobs, without prefix and mount."""
    with service.catalog.read() as conn:
        items = conn.execute(
            select(ITEMS.c.key, ITEMS.c.size, ITEMS.c.etag, FOLDERS.c.path, FOLDERS.c.id)
            .join(FOLDERS, FOLDERS.c.id == ITEMS.c.folder_id)
            .where(ITEMS.c.source_id == source_id, ITEMS.c.state == "present")
        ).all()
        folder_ids = sorted({r.id for r in items})
        folders = conn.execute(select(FOLDERS).where(FOLDERS.c.id.in_(folder_ids))).all()
        jobs = conn.execute(
            select(JOBS.c.processor, JOBS.c.state, JOBS.c.input_version, FOLDERS.c.path)
            .join(FOLDERS, FOLDERS.c.id == JOBS.c.target_id)
            .where(JOBS.c.target_type == "folder", JOBS.c.target_id.in_(folder_ids))
        ).all()

    def path(p: str) -> str:
        return p.removeprefix(mount)

    def meta(m: dict[str, Any] | None) -> dict[str, Any]:
        return {k: str(v).replace(prefix, "") for k, v in (m or {}).items()}

    return {
        "items": sorted((r.key.removeprefix(prefix), r.size, r.etag, path(r.path)) for r in items),
        "folders": sorted((path(f.path), f.state, sorted(meta(f.meta).items())) for f in folders),
        "jobs": sorted((j.processor, j.state, j.input_version, path(j.path)) for j in jobs),
    }


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario())
def test_batches_give_the_catalog_one_by_one_application_gives(
    catalog_url: str, start: Any, s3_bucket: S3Bucket, case: Any
) -> None:
    history, delivered, cuts, limit = case
    service = _service(start, catalog_url)
    applier = applier_for(service.services)
    batch = BatchApplier(applier)
    n = next(_EXAMPLE)
    ref, bat = f"ex{n}-ref/", f"ex{n}-bat/"
    sources = {}
    for prefix in (ref, bat):
        sources[prefix] = service.add_bucket_source(
            prefix[:-1], s3_bucket, prefix[:-1], mount=f"/{prefix[:-1]}"
        )
        # The bucket holds each key's final state (what the store would answer).
        last = {op.key: op for op in history}
        for op in last.values():
            if op.created:
                s3_bucket.put(prefix + op.key, content(op.key))

    def routes(fresh: bool) -> Any:
        return applier.sources.routes(fresh=True)

    def drain(size: int) -> None:
        while inbox.drain(applier, batch, size):
            pass

    for op in history:  # the reference: one event at a time, in sequencer order
        inbox.record(applier, [event(s3_bucket.name, ref, op)], routes)
        drain(1)
    pos = 0
    for cut in itertools.cycle(cuts):  # the change: duplicated, shuffled, in batches
        if pos >= len(delivered):
            break
        chunk = delivered[pos : pos + cut]
        pos += cut
        inbox.record(applier, [event(s3_bucket.name, bat, op) for op in chunk], routes)
        drain(limit)

    expected = visible(service, sources[ref].id, ref, f"/{ref[:-1]}")
    got = visible(service, sources[bat].id, bat, f"/{bat[:-1]}")
    assert got == expected
    outcomes = {e.outcome for e in service.events()}
    assert "pending" not in outcomes and "error" not in outcomes


_SERVICES: dict[str, Service] = {}


def _service(start: Any, catalog_url: str) -> Service:
    """One app per catalog for all examples (each example uses sources of its own); its
    own applier holds events back, so the test drains them itself."""
    if catalog_url not in _SERVICES:
        _SERVICES[catalog_url] = start(
            catalog_url, events_apply_delay_seconds=3600, events_settle_seconds=3600
        )
    return _SERVICES[catalog_url]
