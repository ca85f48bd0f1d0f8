"""No event can block a key for good: sequencers order events of one object lifetime
only, a sync resets what events recorded, and one bad record of a delivery is rejected on
its own. Events go over HTTP to the served app; objects live in moto's S3 server; both
catalogs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import Cli, S3Bucket
from mediamirror.events.model import Action, ObjectEvent

from .support import Service, next_sequencer, outcomes, s3_event, s3_record

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

KEY = "cam/clip.mp4"


def created(bucket: S3Bucket, seq: str, key: str = KEY) -> dict[str, Any]:
    return s3_event(s3_record(bucket.name, key, sequencer=seq))


def removed(bucket: S3Bucket, seq: str, key: str = KEY) -> dict[str, Any]:
    return s3_event(s3_record(bucket.name, key, "ObjectRemoved:Delete", sequencer=seq))


def setup(service: Service, bucket: S3Bucket) -> str:
    service.add_bucket_source("src", bucket)
    return service.push_token("src")


def test_an_absurd_sequencer_does_not_block_a_reuploaded_object(
    service: Service, s3_bucket: S3Bucket
) -> None:
    token = setup(service, s3_bucket)
    s3_bucket.put(KEY, b"version one")
    # The longest sequencer accepted, all F: newer than any real one will ever be.
    resp = service.post("s3", created(s3_bucket, "F" * 32), token=token)
    assert outcomes(resp) == ["applied"]

    s3_bucket.put(KEY, b"version two, longer")
    genuine = created(s3_bucket, next_sequencer())
    resp = service.post("s3", genuine, token=token)

    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "changed"
    assert service.items()[KEY].size == len(b"version two, longer")
    # Within the new lifetime, order holds as before: a redelivery is a duplicate.
    assert outcomes(service.post("s3", genuine, token=token)) == ["duplicate"]


def test_a_64_digit_sequencer_is_refused_and_blocks_nothing(
    service: Service, s3_bucket: S3Bucket
) -> None:
    token = setup(service, s3_bucket)
    s3_bucket.put(KEY, b"version one")
    resp = service.post("s3", created(s3_bucket, "F" * 64), token=token)
    assert resp.status_code == 400
    assert "longer than 32 hexadecimal digits" in resp.json()["error"]
    assert KEY not in service.items()

    s3_bucket.put(KEY, b"version two")
    resp = service.post("s3", created(s3_bucket, next_sequencer()), token=token)
    assert outcomes(resp) == ["applied"]
    assert service.items()[KEY].size == len(b"version two")


def test_a_sync_resets_what_events_recorded(service: Service, s3_bucket: S3Bucket) -> None:
    token = setup(service, s3_bucket)
    s3_bucket.put(KEY, b"version one")
    assert outcomes(service.post("s3", created(s3_bucket, "F" * 32), token=token)) == ["applied"]
    s3_bucket.put(KEY, b"version two: its event was lost")

    cli = Cli(home=service.home, database_url=service.database_url, env=dict(service.env))
    line = cli.run("sync", "src").stdout.strip().splitlines()[-1]

    assert line.startswith("src: 0 added, 1 changed"), line
    item = service.items()[KEY]
    assert (item.sequencer, item.sequencer_lifetime) == (None, None)
    s3_bucket.put(KEY, b"version three")
    resp = service.post("s3", created(s3_bucket, next_sequencer()), token=token)
    assert outcomes(resp) == ["applied"]
    assert service.items()[KEY].size == len(b"version three")


def test_a_key_deleted_and_written_again_starts_a_new_lifetime(
    service: Service, s3_bucket: S3Bucket
) -> None:
    token = setup(service, s3_bucket)
    s3_bucket.put(KEY, b"first life")
    assert outcomes(service.post("s3", created(s3_bucket, "0F00"), token=token)) == ["applied"]
    s3_bucket.delete(KEY)
    delete = removed(s3_bucket, "0F01")
    assert outcomes(service.post("s3", delete, token=token)) == ["applied"]
    assert service.items()[KEY].state == "deleted"

    # Written again; its sequencer looks older than the deletion's.
    s3_bucket.put(KEY, b"second life, longer")
    resp = service.post("s3", created(s3_bucket, "01"), token=token)

    assert outcomes(resp) == ["applied"]
    item = service.items()[KEY]
    assert (item.state, item.size) == ("present", len(b"second life, longer"))
    # The first life's deletion delivered again: a removed event is applied as it says
    # (its sequencer is newer than the one recorded), without reading the store. S3's
    # sequencers of one key only grow, so only numbers like these can do that, and the
    # next sync brings the object back.
    resp = service.post("s3", delete, token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "deleted"
    cli = Cli(home=service.home, database_url=service.database_url, env=dict(service.env))
    line = cli.run("sync", "src").stdout.strip().splitlines()[-1]
    assert line.startswith("src: 1 added, 0 changed, 0 deleted"), line
    assert service.items()[KEY].state == "present"


def test_an_older_read_racing_a_newer_write_is_read_again(
    service: Service, s3_bucket: S3Bucket
) -> None:
    """Two deliveries race: the older one read the store before the newer one wrote. Its
    read disagrees with the recorded lifetime, so the store is read again, not trusted."""
    from mediamirror.events.apply import applier_for, lifetime

    token = setup(service, s3_bucket)
    s3_bucket.put(KEY, b"old")
    applier = applier_for(service.services)
    (route,) = applier.sources.routes(fresh=True)
    runtime = applier._runtime(route)
    old_read = runtime.probe(KEY)
    s3_bucket.put(KEY, b"new, longer")
    assert outcomes(service.post("s3", created(s3_bucket, "0B"), token=token)) == ["applied"]
    recorded = service.items()[KEY]
    assert recorded.sequencer_lifetime == lifetime(runtime.probe(KEY))
    older = ObjectEvent("s3", "ObjectCreated:Put", Action.CREATED, s3_bucket.name, KEY, "0A")

    verdict = applier._write(runtime, older, "0A", old_read, may_read_again=True)
    assert verdict is None  # read the store again first
    result = applier.apply(route, older)

    assert result.outcome.value == "stale"
    assert service.items()[KEY].size == len(b"new, longer")


def test_one_bad_record_does_not_sink_its_delivery(service: Service, s3_bucket: S3Bucket) -> None:
    token = setup(service, s3_bucket)
    s3_bucket.put("ok/clip.mp4", b"fine")
    nul = s3_record(s3_bucket.name, "bad/clip.mp4", sequencer=next_sequencer())
    nul["s3"]["object"]["key"] = "bad%00clip.mp4"
    surrogate = s3_record(s3_bucket.name, "bad/clip.mp4", sequencer=next_sequencer())
    surrogate["s3"]["object"]["key"] = "bad/\ud800.mp4"
    huge = s3_record(s3_bucket.name, "big/" + "k" * 1100 + ".mp4", sequencer=next_sequencer())
    bad_seq = s3_record(s3_bucket.name, "ok/clip.mp4", sequencer="xyz")
    good = s3_record(s3_bucket.name, "ok/clip.mp4", sequencer=next_sequencer())
    body = json.dumps(s3_event(nul, surrogate, huge, bad_seq, good)).encode()  # \ud800 escaped

    resp = service.post("s3", token=token, content=body)

    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["outcome"] for r in results] == ["rejected"] * 4 + ["applied"]
    assert "Records[0].s3.object.key contains a NUL character" in results[0]["detail"]
    assert "Records[1].s3.object.key is not valid Unicode text" in results[1]["detail"]
    assert "Records[2].s3.object.key is longer than 1024 bytes" in results[2]["detail"]
    assert "Records[3].s3.object.sequencer 'xyz' is not a hexadecimal" in results[3]["detail"]
    assert set(service.items()) == {"ok/clip.mp4"}
    recorded = [(e.outcome, e.key) for e in service.events()]
    assert recorded == [("rejected", None)] * 4 + [("applied", "ok/clip.mp4")]
