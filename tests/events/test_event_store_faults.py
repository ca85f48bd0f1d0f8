"""A pushed event whose one-key read-back of the store meets a 503, a reset connection or
a stall: retried within the request when the fault passes, else answered 503 with one
clear line and recorded as an ``error``, with nothing of it in the catalog; the delivery
sent again once the store answers is applied like any other.

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
    info = listed(bucket, key)
    record = s3_record(
        bucket.name, key, size=info["size"], etag=info["etag"], sequencer=next_sequencer()
    )
    return s3_event(record)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_event_through_a_passing_store_fault_is_applied_in_the_request(
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
def test_event_through_a_lasting_store_fault_is_refused_whole_then_applied_on_redelivery(
    faulty: tuple[Service, str], s3_bucket: S3Bucket, proxy: FaultProxy, fault: str
) -> None:
    service, token = faulty
    s3_bucket.put(KEY, b"a clip")
    body = _created(s3_bucket, KEY)
    injected = FAULTS[fault](proxy, None)

    resp = service.post("s3", body, token=token)

    # 503 asks the sender to deliver again; the outcome says why, in one line.
    assert injected.hits == FAST["store_max_attempts"], "the read-back was retried"
    assert resp.status_code == 503, resp.text
    assert outcomes(resp) == ["error"]
    detail = resp.json()["results"][0]["detail"]
    assert detail.startswith(f"cannot list {s3_bucket.url()}"), detail
    assert "\n" not in detail, detail
    # Nothing half-applied: no item, no folder, no job; the event is in the log.
    assert KEY not in service.items()
    assert service.folder(DATASET) is None
    assert [(e.key, e.outcome) for e in service.events()] == [(KEY, "error")]

    proxy.clear()
    again = service.post("s3", body, token=token)

    assert again.status_code == 200, again.text
    assert outcomes(again) == ["applied"]
    assert again.json()["results"][0]["detail"] == "added"
    assert service.items()[KEY].etag == listed(s3_bucket, KEY)["etag"]
    assert service.jobs_of(service.folder(DATASET).id), "post-processing was queued"
