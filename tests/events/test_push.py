"""Push endpoints for S3, MinIO and SNS-wrapped events, applied like a sync, on both
catalogs: the object is put into moto's S3 server, its event is posted over HTTP to the
served app, and the catalog is read back (then checked against a real ``mediamirror
sync``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Cli, S3Bucket

from .support import (
    Service,
    SnsPeer,
    listed,
    minio_event,
    next_sequencer,
    outcomes,
    s3_event,
    s3_record,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def cli_for(service: Service) -> Cli:
    return Cli(home=service.home, database_url=service.database_url, env=dict(service.env))


def sync_line(service: Service, name: str = "src") -> str:
    out = cli_for(service).run("sync", name).stdout
    return out.strip().splitlines()[-1]


def created(
    bucket: S3Bucket, key: str, *, channel: str, sns: SnsPeer, seq: str | None = None
) -> dict[str, Any]:
    """The body S3 (or MinIO, or SNS) would send for the object just put at ``key``."""
    info = listed(bucket, key)
    record = s3_record(
        bucket.name,
        key,
        size=info["size"],
        etag=info["etag"],
        sequencer=seq or next_sequencer(),
        minio=channel == "minio",
    )
    if channel == "minio":
        return minio_event(record)
    if channel == "sns":
        return sns.notification(s3_event(record))
    return s3_event(record)


@pytest.mark.parametrize("channel", ["s3", "minio", "sns"])
def test_created_object_is_catalogued_and_queued_within_the_request(
    service: Service, s3_bucket: S3Bucket, sns: SnsPeer, channel: str
) -> None:
    key = "site/cam 1/clip one.mp4"
    s3_bucket.put(key, b"not really a video, but named like one")
    source = service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")

    delivery = created(s3_bucket, key, channel=channel, sns=sns)
    resp = service.post(channel, delivery, token=token)

    # Answered once recorded; then applied by the events applier.
    assert resp.status_code == 200, resp.text
    assert outcomes(resp.answer) == ["recorded"]
    body = resp.json()
    assert outcomes(resp) == ["applied"]
    result = body["results"][0]
    assert result["key"] == key
    assert result["detail"] == "added"
    assert result["dataset"] == "/src/site/cam 1/Video clip one.mp4"
    assert result["jobs"], "post-processing was not queued within the request"

    item = service.items()[key]
    info = listed(s3_bucket, key)
    assert (item.state, item.size, item.etag) == ("present", info["size"], info["etag"])
    # Built from the event (no request to the store): its time is the event's.
    record = (delivery.get("Records") or json.loads(delivery.get("Message", "{}"))["Records"])[0]
    assert item.last_modified.isoformat(timespec="milliseconds") == record["eventTime"].replace(
        "Z", "+00:00"
    )
    assert item.sequencer is not None
    dataset = service.folder("/src/site/cam 1/Video clip one.mp4")
    assert dataset.meta["type"] == "video"
    assert dataset.meta["fps"] == -1
    assert dataset.meta["import_path"] == "site/cam 1"
    assert dataset.meta["import_source"] == f"s3://{s3_bucket.name}/{key}"
    assert dataset.meta["MarkForPostProcess"] is False  # cleared: its jobs are queued
    jobs = service.jobs_of(dataset.id)
    assert [j.id for j in jobs] == result["jobs"]
    assert {j.state for j in jobs} == {"queued"}
    assert {e.outcome for e in service.events()} == {"applied"}
    assert service.events()[0].source_id == source.id

    # A sync afterwards finds the catalog already current.
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 1 unchanged")


def test_url_encoded_keys_are_decoded_exactly(service: Service, s3_bucket: S3Bucket) -> None:
    keys = [
        "a/b/clip one.mp4",
        "a/b/plus+sign.mp4",
        "a/b/percent%20literal.mp4",
        "a/b/été/ünïcode 日本.mov",
        "a/b/odd &=?#;,:'\"chars.mkv",
    ]
    for key in keys:
        s3_bucket.put(key, key.encode())
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    records = [
        s3_record(s3_bucket.name, k, sequencer=next_sequencer(), **_described(s3_bucket, k))
        for k in keys
    ]
    # The brief's example, encoded exactly as MinIO does: '/' as %2F, ' ' as '+'.
    assert records[0]["s3"]["object"]["key"] == "a%2Fb%2Fclip+one.mp4"

    resp = service.post("s3", s3_event(*records), token=token)

    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["applied"] * len(keys)
    items = service.items()
    assert set(items) == set(keys)
    assert sync_line(service).startswith(f"src: 0 added, 0 changed, 0 deleted, {len(keys)} unch")


def test_duplicates_and_reordering_never_regress(service: Service, s3_bucket: S3Bucket) -> None:
    key = "v/clip.mp4"
    s3_bucket.put(key, b"one")
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    info = listed(s3_bucket, key)
    # Varying lengths: compared after left-padding, "FF" < "0100".
    create_seq, delete_seq, older_seq = "FF", "0100", "0FE"
    create = s3_event(
        s3_record(s3_bucket.name, key, size=3, etag=info["etag"], sequencer=create_seq)
    )

    assert outcomes(service.post("s3", create, token=token)) == ["applied"]
    again = service.post("s3", create, token=token)
    assert outcomes(again) == ["duplicate"]
    assert again.json()["results"][0]["jobs"] == []
    folder = service.folder_of(service.items()[key].source_id, key)
    assert len(service.jobs_of(folder.id)) == 1

    s3_bucket.delete(key)
    delete = s3_event(s3_record(s3_bucket.name, key, "ObjectRemoved:Delete", sequencer=delete_seq))
    resp = service.post("s3", delete, token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "deleted"
    assert service.items()[key].state == "deleted"
    assert service.folder(folder.path).state == "empty"

    # The create arrives again, late, and an even older one: neither brings it back.
    assert outcomes(service.post("s3", create, token=token)) == ["stale"]
    older = s3_event(s3_record(s3_bucket.name, key, sequencer=older_seq, size=3, etag="x"))
    assert outcomes(service.post("s3", older, token=token)) == ["stale"]
    assert outcomes(service.post("s3", delete, token=token)) == ["duplicate"]
    items = service.items()
    assert len(items) == 1
    assert items[key].state == "deleted"
    assert items[key].sequencer == delete_seq
    assert [e.outcome for e in service.events()] == [
        "applied",
        "duplicate",
        "applied",
        "stale",
        "stale",
        "duplicate",
    ]
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 0 unchanged")


def test_delete_first_then_older_create_stays_deleted(
    service: Service, s3_bucket: S3Bucket
) -> None:
    """Delivered out of order: the delete (newer) arrives before the create (older)."""
    s3_bucket.put("keep.txt")
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    key = "late/clip.mp4"
    s3_bucket.put(key, b"v1")
    create = s3_event(s3_record(s3_bucket.name, key, sequencer="0A", size=2, etag="x"))
    assert outcomes(service.post("s3", create, token=token)) == ["applied"]
    s3_bucket.put(key, b"v2")  # overwritten (sequencer 0B), then deleted (0C)
    s3_bucket.delete(key)

    delete = s3_event(s3_record(s3_bucket.name, key, "ObjectRemoved:Delete", sequencer="0C"))
    overwrite = s3_event(s3_record(s3_bucket.name, key, sequencer="0B", size=2, etag="y"))
    assert outcomes(service.post("s3", delete, token=token)) == ["applied"]
    assert outcomes(service.post("s3", overwrite, token=token)) == ["stale"]
    assert service.items()[key].state == "deleted"


def _described(bucket: S3Bucket, key: str) -> dict[str, Any]:
    """Size and etag of an object as its created event describes it."""
    info = listed(bucket, key)
    return {"size": info["size"], "etag": info["etag"]}


def test_an_event_is_applied_as_described_and_a_sync_corrects_it(
    service: Service, s3_bucket: S3Bucket
) -> None:
    """A created event with size and etag is applied as it says, without reading the
    store; what it got wrong (a bogus size, a late create for an object deleted since)
    is corrected by the next sync."""
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    s3_bucket.put("x/a.mp4", b"first")
    ev = s3_event(s3_record(s3_bucket.name, "x/a.mp4", sequencer="01", size=999, etag="bogus"))
    assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    assert (service.items()["x/a.mp4"].size, service.items()["x/a.mp4"].etag) == (999, "bogus")
    ev = s3_event(s3_record(s3_bucket.name, "x/gone.mp4", sequencer="03", size=1, etag="x"))
    assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    assert service.items()["x/gone.mp4"].state == "present"

    assert sync_line(service).startswith("src: 0 added, 1 changed, 1 deleted, 0 unchanged")
    items = service.items()
    assert (items["x/a.mp4"].size, items["x/a.mp4"].etag) == (
        5,
        listed(s3_bucket, "x/a.mp4")["etag"],
    )
    assert items["x/gone.mp4"].state == "deleted"
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 1 unchanged")


def test_store_is_the_truth_for_the_state_written(service: Service, s3_bucket: S3Bucket) -> None:
    """Events without size and etag are applied from the store: a create for an object
    deleted since leaves it deleted; an overwrite is seen with the size and etag the
    store lists."""
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    s3_bucket.put("x/a.mp4", b"first")
    ev = s3_event(s3_record(s3_bucket.name, "x/a.mp4", sequencer="01"))
    assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    item = service.items()["x/a.mp4"]
    assert (item.size, item.etag) == (5, listed(s3_bucket, "x/a.mp4")["etag"])

    s3_bucket.put("x/a.mp4", b"second version")
    ev = s3_event(s3_record(s3_bucket.name, "x/a.mp4", sequencer="02"))
    resp = service.post("s3", ev, token=token)
    assert resp.json()["results"][0]["detail"] == "changed"
    assert service.items()["x/a.mp4"].size == len(b"second version")
    dataset = service.folder("/src/x/Video a.mp4")
    assert len(service.jobs_of(dataset.id)) == 2  # a new input version: processed again

    ev = s3_event(s3_record(s3_bucket.name, "x/gone.mp4", sequencer="03"))
    resp = service.post("s3", ev, token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "not in the store"
    assert "x/gone.mp4" not in service.items()


def test_sources_sharing_a_bucket_get_their_own_keys(service: Service, s3_bucket: S3Bucket) -> None:
    s3_bucket.put("cams/a/one.mp4")
    s3_bucket.put("cams/b/two.mp4")
    s3_bucket.put("cams/b/skip/three.mp4")
    s3_bucket.put("other/four.mp4")
    a = service.add_bucket_source("cam-a", s3_bucket, "cams/a", mount="/media/a")
    b = service.add_bucket_source("cam-b", s3_bucket, "cams/b", mount="/media/b", exclude="^skip/")
    token = service.push_token("cam-a")  # one webhook for the whole bucket

    keys = ["cams/a/one.mp4", "cams/b/two.mp4", "cams/b/skip/three.mp4", "other/four.mp4"]
    records = [s3_record(s3_bucket.name, k, sequencer=next_sequencer()) for k in keys]
    resp = service.post("s3", s3_event(*records), token=token)

    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [(r["source"], r["outcome"]) for r in results] == [
        ("cam-a", "applied"),
        ("cam-b", "applied"),
        ("cam-b", "ignored"),
        ("cam-a", "ignored"),
    ]
    assert results[2]["detail"] == "skipped by the source's filters"
    assert set(service.items_of(a.id)) == {"cams/a/one.mp4"}
    assert set(service.items_of(b.id)) == {"cams/b/two.mp4"}
    assert service.folder("/media/a/Video one.mp4").meta["type"] == "video"
    assert service.folder("/media/b/Video two.mp4").meta["type"] == "video"
    assert sync_line(service, "cam-a").startswith("cam-a: 0 added, 0 changed, 0 deleted, 1 un")
    assert sync_line(service, "cam-b").startswith("cam-b: 0 added, 0 changed, 0 deleted, 1 un")


def test_sidecars_join_their_video_as_a_sync_would(service: Service, s3_bucket: S3Bucket) -> None:
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    for key in ("d/clip.json", "d/clip.mov", "d/clip.mov.csv"):
        s3_bucket.put(key, b"{}")
    # The sidecar's event arrives before its video's.
    for key in ("d/clip.json", "d/clip.mov", "d/clip.mov.csv"):
        ev = s3_event(s3_record(s3_bucket.name, key, sequencer=next_sequencer()))
        assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    sid = service.items()["d/clip.mov"].source_id
    assert {service.folder_of(sid, k).path for k in ("d/clip.json", "d/clip.mov.csv")} == {
        "/src/d/Video clip.mov"
    }
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 3 unchanged")

    # The video goes: its sidecars move back to the plain folder, as the sync does.
    s3_bucket.delete("d/clip.mov")
    ev = s3_event(
        s3_record(s3_bucket.name, "d/clip.mov", "ObjectRemoved:Delete", sequencer=next_sequencer())
    )
    assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    assert service.folder_of(sid, "d/clip.json").path == "/src/d"
    assert service.folder("/src/d/Video clip.mov").state == "empty"
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 2 unchanged")


def test_image_sequence_is_queued_once_its_frames_settle(
    catalog_url: str, start: Any, s3_bucket: S3Bucket
) -> None:
    service = start(catalog_url, events_settle_seconds=1)
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    frames = [f"seq/frame-{i:03d}.png" for i in range(5)]
    s3_bucket.put_many(frames)
    records = [s3_record(s3_bucket.name, k, sequencer=next_sequencer()) for k in frames]
    for record in records:
        resp = service.post("s3", s3_event(record), token=token)
        assert outcomes(resp) == ["applied"]
        assert resp.json()["results"][0]["jobs"] == []
    dataset = service.folder("/src/seq")
    assert dataset.meta["type"] == "image-sequence"
    assert service.jobs_of(dataset.id) == []
    jobs = service.wait_for(lambda: service.jobs_of(dataset.id), what="the sequence's jobs")
    assert len(jobs) == 1
    # Queued, then the mark cleared (the next transaction of the same post-processing).
    service.wait_for(
        lambda: service.folder("/src/seq").meta["MarkForPostProcess"] is False, what="the mark"
    )
    assert sync_line(service).startswith("src: 0 added, 0 changed, 0 deleted, 5 unchanged")


def test_keys_applied_during_a_sync_are_read_again_after_it(
    service: Service, s3_bucket: S3Bucket
) -> None:
    """A sync may have listed a page before an event and write its older view after it:
    keys applied while the source's sync lease is held are read again once it ends."""
    from sqlalchemy import update

    from mediamirror.catalog import leases
    from mediamirror.catalog.models import ITEMS

    source = service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    owner = leases.new_owner()
    leases.acquire(service.catalog, f"sync:{source.id}", owner, 60)
    s3_bucket.put("live/clip.mp4", b"new")
    ev = s3_event(s3_record(s3_bucket.name, "live/clip.mp4", sequencer=next_sequencer()))
    assert outcomes(service.post("s3", ev, token=token)) == ["applied"]
    # What the sync's chunk does when its listing was taken before the object existed.
    with service.catalog.write() as conn:
        conn.execute(update(ITEMS).where(ITEMS.c.key == "live/clip.mp4").values(state="deleted"))

    leases.release(service.catalog, f"sync:{source.id}", owner)

    service.wait_for(
        lambda: service.items()["live/clip.mp4"].state == "present", what="the re-read"
    )
    assert [e.outcome for e in service.events()] == ["applied"]  # re-reads are not events


# -- bad input is a 4xx, never a 500 -------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\x7f", " "])
def test_a_control_character_in_the_sns_certificate_url_is_refused(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer, char: str
) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    good = sns.notification(s3_event(s3_record(s3_bucket.name, "k.mp4", sequencer="01")))
    # Still matching the trusted pattern: only the character makes it unusable.
    forged = {**good, "SigningCertURL": good["SigningCertURL"] + char + "x"}

    resp = svc.post("sns", forged, token=token)

    assert resp.status_code == 401, resp.text
    assert "untrusted SNS SigningCertURL" in resp.json()["error"]
    assert svc.items() == {}


def test_json_nested_too_deeply_is_400(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    from .support import gcs_push

    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    gcs = svc.add_source("g", f"gs://{s3_bucket.name}/", endpoint_url=s3_bucket.server.endpoint)
    token, gcs_token = svc.push_token("src"), svc.push_token(gcs.name)
    deep = "[" * 100_000
    # The body itself, an SNS Message inside a signed envelope, and a Pub/Sub data field.
    envelope = sns.sign({**sns.notification({}), "Message": deep})
    gcs_body = gcs_push(s3_bucket.name, "k.mp4", "OBJECT_FINALIZE", 1)
    gcs_body["message"]["data"] = base64.b64encode(deep.encode()).decode()
    for channel, content, push_token in [
        ("s3", deep.encode(), token),
        ("minio", b'{"Records": ' + deep.encode(), token),
        ("sns", json.dumps(envelope).encode(), token),
        ("gcs", json.dumps(gcs_body).encode(), gcs_token),
    ]:
        resp = svc.post(channel, content=content, token=push_token)
        assert resp.status_code == 400, (channel, resp.status_code, resp.text)
        error = resp.json()["error"]
        assert "nested too deeply" in error or "not base64-encoded JSON" in error, error
    assert svc.items() == {}


# -- fuzzing: whatever a sender posts, never a server error --------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_text_or_any = st.one_of(st.text(max_size=40), _json)
_s3_records = st.fixed_dictionaries(
    {
        "Records": st.lists(
            st.fixed_dictionaries(
                {
                    "eventName": st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete"])
                    | _text_or_any,
                    "eventTime": _text_or_any,
                    "s3": st.fixed_dictionaries(
                        {
                            "bucket": st.fixed_dictionaries({"name": _text_or_any}),
                            "object": st.fixed_dictionaries(
                                {"key": _text_or_any},
                                optional={"sequencer": _text_or_any, "size": _text_or_any},
                            ),
                        }
                    )
                    | _json,
                }
            ),
            max_size=3,
        )
    },
    optional={"EventName": _text_or_any, "Key": _text_or_any},
)
_sns = st.fixed_dictionaries(
    {
        "Type": st.sampled_from(["Notification", "SubscriptionConfirmation"]) | _text_or_any,
        "TopicArn": _text_or_any,
        "Message": _text_or_any,
        "SignatureVersion": st.sampled_from(["1", "2"]) | _text_or_any,
        "Signature": _text_or_any,
        "SigningCertURL": st.text(max_size=60) | st.just("{cert}") | st.just("{cert}\x00"),
    },
    optional={"SubscribeURL": _text_or_any, "Timestamp": _text_or_any, "MessageId": _text_or_any},
)
_gcs = st.fixed_dictionaries(
    {
        "message": st.fixed_dictionaries(
            {
                "attributes": st.dictionaries(
                    st.sampled_from(["eventType", "bucketId", "objectId", "objectGeneration"]),
                    _text_or_any,
                )
                | _json,
                "data": _json.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode())
                | _text_or_any,
            }
        )
        | _json
    }
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(1, 100_000).map(lambda n: b"[" * n),
    _json.map(lambda v: json.dumps(v).encode()),
    st.one_of(_s3_records, _sns, _gcs).map(lambda v: json.dumps(v).encode()),
)


def test_no_push_body_makes_a_server_error(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    """Generated bodies (JSON of any shape, bytes, S3/SNS/GCS-shaped documents with wrong
    types) on every push endpoint, with and without the source's token: never a 5xx."""
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    gcs = svc.add_source("g", f"gs://{s3_bucket.name}/", endpoint_url=s3_bucket.server.endpoint)
    tokens = {"s3": svc.push_token("src"), "gcs": svc.push_token(gcs.name)}

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        channel=st.sampled_from(["s3", "minio", "sns", "gcs"]),
        authenticated=st.booleans(),
        body=_bodies,
    )
    def push(channel: str, authenticated: bool, body: bytes) -> None:
        token = tokens["gcs" if channel == "gcs" else "s3"] if authenticated else None
        # A certificate URL the service trusts, so the signature check itself is reached.
        body = body.replace(b"{cert}", sns.cert_url().encode())
        resp = svc.post(channel, content=body, token=token)
        assert resp.status_code < 500, (channel, body[:300], resp.status_code, resp.text)

    push()


def test_a_resync_after_event_created_items_writes_nothing(
    service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    """Items built from events (no request to the store) carry the event's time, not the
    listing's LastModified; a sync of the unchanged bucket still finds nothing to write."""
    keys = ["r/clip.mp4", "r/clip.json", "r/other.mov", "r/still.txt", "r/frames/f1.png"]
    for key in keys:
        s3_bucket.put(key, f"bytes of {key}".encode())
    service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    records = [
        s3_record(s3_bucket.name, k, sequencer=next_sequencer(), **_described(s3_bucket, k))
        for k in keys
    ]
    assert outcomes(service.post("s3", s3_event(*records), token=token)) == ["applied"] * 5
    before = service.items()
    assert any(before[k].last_modified != listed(s3_bucket, k)["last_modified"] for k in keys)

    line = sync_line(service)

    assert line.startswith("src: 0 added, 0 changed, 0 deleted, 5 unchanged"), line
    assert service.items() == before  # not one column of one row written
