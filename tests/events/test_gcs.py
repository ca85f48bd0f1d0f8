"""Google Cloud Storage notifications by Pub/Sub push, on both catalogs.

The source is a ``gs://`` bucket read through the S3-interoperable API (moto plays
storage.googleapis.com); the four event types arrive in and out of order."""

from __future__ import annotations

import pytest

from helpers import Cli, S3Bucket

from .support import Service, gcs_push, md5, outcomes

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def gcs_source(service: Service, bucket: S3Bucket) -> int:
    src = service.add_source("gcs", f"gs://{bucket.name}/", endpoint_url=bucket.server.endpoint)
    assert src.preset == "gcs"
    return int(src.id)


def test_gcs_events_in_and_out_of_order(service: Service, s3_bucket: S3Bucket) -> None:
    sid = gcs_source(service, s3_bucket)
    token = service.push_token("gcs")
    key = "field/day 1/clip.mp4"  # objectId is never URL-encoded
    b = s3_bucket.name

    s3_bucket.put(key, b"generation one")
    finalize = gcs_push(b, key, "OBJECT_FINALIZE", 100, size=14, md5=md5(b"generation one"))
    resp = service.post("gcs", finalize, token=token)
    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["applied"]
    result = resp.json()["results"][0]
    assert result["dataset"] == "/gcs/field/day 1/Video clip.mp4"
    assert result["jobs"]
    item = service.items_of(sid)[key]
    assert (item.state, item.size) == ("present", 14)
    assert item.sequencer.startswith("00000000000000000100")

    assert outcomes(service.post("gcs", finalize, token=token)) == ["duplicate"]
    meta = gcs_push(b, key, "OBJECT_METADATA_UPDATE", 100, metageneration=2)
    resp = service.post("gcs", meta, token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "unchanged"

    # Overwritten: the new generation's FINALIZE arrives before the old one's DELETE
    # and ARCHIVE, which are then stale.
    s3_bucket.put(key, b"generation two, longer")
    resp = service.post("gcs", gcs_push(b, key, "OBJECT_FINALIZE", 200, size=22), token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "changed"
    old_delete = gcs_push(b, key, "OBJECT_DELETE", 100, metageneration=2, overwritten_by=200)
    assert outcomes(service.post("gcs", old_delete, token=token)) == ["stale"]
    old_archive = gcs_push(b, key, "OBJECT_ARCHIVE", 100, metageneration=2, overwritten_by=200)
    assert outcomes(service.post("gcs", old_archive, token=token)) == ["stale"]
    assert service.items_of(sid)[key].size == 22

    # Deleted: a late metadata update of that generation does not bring it back.
    s3_bucket.delete(key)
    resp = service.post("gcs", gcs_push(b, key, "OBJECT_DELETE", 200), token=token)
    assert outcomes(resp) == ["applied"]
    assert resp.json()["results"][0]["detail"] == "deleted"
    late = gcs_push(b, key, "OBJECT_METADATA_UPDATE", 200, metageneration=2)
    assert outcomes(service.post("gcs", late, token=token)) == ["stale"]
    assert service.items_of(sid)[key].state == "deleted"
    assert service.folder("/gcs/field/day 1/Video clip.mp4").state == "empty"

    # Versioned bucket: the live version becomes noncurrent (ARCHIVE).
    s3_bucket.put("field/b.mov", b"b")
    assert outcomes(
        service.post("gcs", gcs_push(b, "field/b.mov", "OBJECT_FINALIZE", 300), token=token)
    ) == ["applied"]
    s3_bucket.delete("field/b.mov")
    resp = service.post("gcs", gcs_push(b, "field/b.mov", "OBJECT_ARCHIVE", 300), token=token)
    assert outcomes(resp) == ["applied"]
    assert service.items_of(sid)["field/b.mov"].state == "deleted"

    events = service.events()
    assert {e.channel for e in events} == {"gcs"}
    assert [e.event_type for e in events][:3] == [
        "OBJECT_FINALIZE",
        "OBJECT_FINALIZE",
        "OBJECT_METADATA_UPDATE",
    ]
    cli = Cli(home=service.home, database_url=service.database_url, env=dict(service.env))
    line = cli.run("sync", "gcs").stdout.strip().splitlines()[-1]
    assert line.startswith("gcs: 0 added, 0 changed, 0 deleted, 0 unchanged"), line


def test_gcs_push_body_errors(sqlite_service: Service, s3_bucket: S3Bucket) -> None:
    svc = sqlite_service
    gcs_source(svc, s3_bucket)
    token = svc.push_token("gcs")
    good = gcs_push(s3_bucket.name, "k.mp4", "OBJECT_FINALIZE", 1)
    no_attributes = {"message": {"data": good["message"]["data"]}}
    bad_data = {"message": {**good["message"], "data": "%%% not base64"}}
    bad_generation = {
        "message": {
            **good["message"],
            "attributes": {**good["message"]["attributes"], "objectGeneration": "x"},
        }
    }
    for body, error in [
        ({"subscription": "s"}, "must be a JSON object with a message"),
        (no_attributes, "message.attributes is missing"),
        (bad_data, "message.data is not base64-encoded JSON"),
        (bad_generation, "objectGeneration 'x' is not an integer"),
    ]:
        resp = svc.post("gcs", body, token=token)
        assert resp.status_code == 400, resp.text
        assert error in resp.json()["error"]
    assert svc.post("gcs", good).status_code == 401
    unknown = gcs_push(s3_bucket.name, "k.mp4", "OBJECT_SOMETHING_NEW", 1)
    assert outcomes(svc.post("gcs", unknown, token=token)) == ["ignored"]
    assert [e.outcome for e in svc.events()] == ["ignored"]
    refused = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    assert {r["reason"]: r["count"] for r in refused} == {
        "malformed body": 4,
        "no valid push token": 1,
    }


def test_an_absurd_generation_does_not_block_the_next_one(
    service: Service, s3_bucket: S3Bucket
) -> None:
    sid = gcs_source(service, s3_bucket)
    token = service.push_token("gcs")
    key, b = "field/clip.mp4", s3_bucket.name
    s3_bucket.put(key, b"generation one")
    absurd = gcs_push(b, key, "OBJECT_FINALIZE", 10**20 - 1, metageneration=10**12 - 1)
    assert outcomes(service.post("gcs", absurd, token=token)) == ["applied"]

    s3_bucket.put(key, b"generation two, longer")
    resp = service.post("gcs", gcs_push(b, key, "OBJECT_FINALIZE", 300), token=token)

    assert outcomes(resp) == ["applied"]
    assert service.items_of(sid)[key].size == len(b"generation two, longer")
    # Within that generation, order holds: its late duplicate and an older update.
    resp = service.post("gcs", gcs_push(b, key, "OBJECT_FINALIZE", 300), token=token)
    assert outcomes(resp) == ["duplicate"]
    s3_bucket.delete(key)
    resp = service.post("gcs", gcs_push(b, key, "OBJECT_DELETE", 300), token=token)
    assert outcomes(resp) == ["applied"]
    late = gcs_push(b, key, "OBJECT_METADATA_UPDATE", 300, metageneration=2)
    assert outcomes(service.post("gcs", late, token=token)) == ["stale"]
    assert service.items_of(sid)[key].state == "deleted"


@pytest.mark.parametrize(
    ("attribute", "value", "error"),
    [
        ("objectGeneration", "12abc", "objectGeneration '12abc' is not an integer"),
        ("objectGeneration", "-5", "objectGeneration '-5' is not an integer"),
        ("objectGeneration", "1" * 21, "objectGeneration 111111111111111111111... is out of"),
        ("objectId", "k" * 1025, "objectId is longer than 1024 bytes"),
        ("objectId", "a\x00b.mp4", "objectId contains a NUL character"),
        ("bucketId", "b\ud800", "bucketId is not valid Unicode text"),
    ],
)
def test_gcs_attributes_that_cannot_be_ordered_or_stored_are_refused(
    sqlite_service: Service, s3_bucket: S3Bucket, attribute: str, value: str, error: str
) -> None:
    svc = sqlite_service
    gcs_source(svc, s3_bucket)
    token = svc.push_token("gcs")
    body = gcs_push(s3_bucket.name, "k.mp4", "OBJECT_FINALIZE", 1)
    body["message"]["attributes"][attribute] = value

    resp = svc.post("gcs", body, token=token)

    assert resp.status_code == 400, resp.text
    assert error in resp.json()["error"]
    assert svc.items() == {}


def test_a_metageneration_wider_than_its_field_is_refused(
    sqlite_service: Service, s3_bucket: S3Bucket
) -> None:
    """A wider number would make a longer ordering key, newer than every real one."""
    svc = sqlite_service
    gcs_source(svc, s3_bucket)
    token = svc.push_token("gcs")
    s3_bucket.put("k.mp4")
    body = gcs_push(s3_bucket.name, "k.mp4", "OBJECT_FINALIZE", 1, metageneration=10**12)

    resp = svc.post("gcs", body, token=token)

    assert resp.status_code == 400, resp.text
    assert "metageneration 1000000000000... is out of range" in resp.json()["error"]
    assert svc.items() == {}
