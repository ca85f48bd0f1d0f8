"""A recorded event whose key must be read back from the store (its created event has
no size or etag) meets a 503, a reset connection or a stall: retried at once when the
fault passes, else left ``pending`` with one clear line saying why and nothing of it in
the catalog, and applied by the events applier once the store answers (the sender was
told it is recorded: it does not send it again).

The faults come from the real proxy of tests/faults.py between the served app and moto's
S3 server; the app, the store and the catalog are the real things.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from faults import Fault, FaultProxy
from helpers import S3Bucket, S3Server

from .support import Service, listed, next_sequencer, outcomes, s3_event, s3_record

pytestmark = pytest.mark.timeout(120)

KEY = "cam/clip.mp4"
DATASET = "/src/cam/Video clip.mp4"
#: The one-key listing an event is read back with (ListObjectsV2).
LISTING = r"list-type=2"
#: Quick retries and a short read timeout, so that every fault costs a few seconds at most.
FAST = {"store_max_attempts": 2, "store_connect_timeout": 2, "store_read_timeout": 1}


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def faulty(
    sqlite_url: str, start: Callable[..., Service], s3_bucket: S3Bucket, proxy: FaultProxy
) -> tuple[Service, str]:
    """The app with a source on ``s3_bucket`` reached through the proxy, and its push token."""
    service = start(sqlite_url, **FAST)
    service.add_bucket_source("src", s3_bucket, endpoint_url=proxy.endpoint)
    return service, service.push_token("src")


FAULTS: dict[str, Callable[[FaultProxy, int | None], Fault]] = {
    "503": lambda proxy, times: proxy.fail(503, times=times, query=LISTING),
    "reset": lambda proxy, times: proxy.reset(times=times, query=LISTING),
    "reset-mid-body": lambda proxy, times: proxy.reset(times=times, mid_body=True, query=LISTING),
    # Held far longer than the read timeout: only that gets the request going again.
    "stall": lambda proxy, times: proxy.stall(60, times=times, query=LISTING),
}


def _created(bucket: S3Bucket, key: str) -> dict[str, Any]:
    """A created event without size and etag: applying it reads the store."""
    return s3_event(s3_record(bucket.name, key, sequencer=next_sequencer()))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_event_through_a_passing_store_fault_is_applied(
    faulty: tuple[Service, str], s3_bucket: S3Bucket, proxy: FaultProxy, fault: str
) -> None:
    service, token = faulty
    s3_bucket.put(KEY, b"a clip")
    injected = FAULTS[fault](proxy, 1)

    resp = service.post("s3", _created(s3_bucket, KEY), token=token)

    assert injected.hits == 1
    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["applied"]
    item = service.items()[KEY]
    assert (item.state, item.etag) == ("present", listed(s3_bucket, KEY)["etag"])
    assert service.jobs_of(service.folder(DATASET).id), "post-processing was queued"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_event_through_a_lasting_store_fault_stays_pending_then_is_applied(
    faulty: tuple[Service, str], s3_bucket: S3Bucket, proxy: FaultProxy, fault: str
) -> None:
    service, token = faulty
    s3_bucket.put(KEY, b"a clip")
    injected = FAULTS[fault](proxy, None)

    resp = service.post("s3", _created(s3_bucket, KEY), token=token, settle=False)

    # Recorded: the sender is done; the applier keeps trying.
    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["recorded"]
    event = service.wait_for(
        lambda: next((e for e in service.events() if e.detail), None), 60, "the first failure"
    )
    assert injected.hits >= FAST["store_max_attempts"], "the read-back was retried"
    assert event.outcome == "pending"
    assert event.detail.startswith(f"cannot list {s3_bucket.url()}"), event.detail
    assert "\n" not in event.detail, event.detail
    # Nothing half-applied: no item, no folder, no job.
    assert KEY not in service.items()
    assert service.folder(DATASET) is None

    proxy.clear()
    (applied,) = service.wait_for(
        lambda: [e for e in service.events() if e.outcome != "pending"], 60, "the event applied"
    )

    assert (applied.outcome, applied.detail) == ("applied", "added")
    assert service.items()[KEY].etag == listed(s3_bucket, KEY)["etag"]
    assert service.jobs_of(service.folder(DATASET).id), "post-processing was queued"
