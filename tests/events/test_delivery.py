"""What the push endpoints refuse or merely acknowledge: authentication, malformed and
oversized bodies, test events, SNS subscription confirmation and signatures. Every
delivery, refused or not, is recorded and never answered with a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from helpers import S3Bucket

from .support import (
    Service,
    SnsPeer,
    next_sequencer,
    outcomes,
    s3_event,
    s3_record,
    s3_test_event,
)

pytestmark = pytest.mark.timeout(120)


def one_event(bucket: S3Bucket, key: str = "in/clip.mp4") -> dict[str, object]:
    bucket.put(key)
    return s3_event(s3_record(bucket.name, key, sequencer=next_sequencer()))


def test_push_token_is_needed_and_can_come_three_ways(
    sqlite_service: Service, s3_bucket: S3Bucket
) -> None:
    svc = sqlite_service
    source = svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    body = one_event(s3_bucket)

    missing = svc.post("s3", body)
    assert missing.status_code == 401
    assert "push token is required" in missing.json()["error"]
    wrong = svc.post("s3", body, token="mmp_" + "x" * 43)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid push token"
    api_style = svc.post("s3", body, headers={"Authorization": "Bearer mm_not-a-push-token"})
    assert api_style.status_code == 401
    assert svc.items() == {}

    assert svc.post("s3", body, headers={"X-Mediamirror-Token": token}).status_code == 200
    again = svc.post("s3", body, headers={"Authorization": f"Bearer {token}"})
    assert outcomes(again) == ["duplicate"]
    # Pub/Sub may send its own OIDC bearer token beside ours in the URL.
    oidc = svc.post("s3", body, token=token, headers={"Authorization": "Bearer eyJhbGciOi.x.y"})
    assert outcomes(oidc) == ["duplicate"]

    # A new token replaces the old one at once.
    new_token = svc.push_token("src")
    assert svc.post("s3", body, token=token).status_code == 401
    assert svc.post("s3", body, token=new_token).status_code == 200

    # Refusals are counted per source, channel and reason, not kept as events.
    events = svc.events()
    assert {e.source_id for e in events} == {source.id}
    assert "rejected" not in {e.outcome for e in events}
    (refused,) = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    assert (refused["source"], refused["channel"], refused["count"]) == (None, "s3", 4)
    assert refused["reason"] == "no valid push token" and refused["detail"]


def test_a_replaced_token_is_refused_whatever_it_sends(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    """The token is checked against the catalog in the transaction that records a
    delivery, not only in the source table (re-read every few seconds): a token replaced
    a moment ago is refused at once, and for that, whatever its delivery holds; nothing
    of it is recorded or done (no SNS subscription confirmed)."""
    from mediamirror.events.apply import applier_for

    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    table = applier_for(svc.services).sources
    table.reload_seconds = 3600.0  # the table would still know a replaced token
    deliveries = [
        ("s3", json.dumps(one_event(s3_bucket, "in/new.mp4")).encode()),
        ("s3", b'{"Records": []}'),
        ("s3", b"{not json"),
        ("gcs", b'{"message": {}}'),
        ("sns", json.dumps(sns.confirmation()).encode()),
    ]
    confirmed = len(sns.confirmed)
    for i, (channel, content) in enumerate(deliveries):
        old = svc.push_token("src")
        known = svc.post("s3", one_event(s3_bucket, f"in/known-{i}.mp4"), token=old)
        assert known.status_code == 200
        svc.push_token("src")
        assert table.by_token(old, confirm=False) is not None  # the table is behind
        resp = svc.post(channel, content=content, token=old)
        assert (resp.status_code, resp.json()["error"]) == (401, "invalid push token"), channel
    assert len(sns.confirmed) == confirmed
    assert set(svc.items()) == {f"in/known-{i}.mp4" for i in range(len(deliveries))}
    assert [e.outcome for e in svc.events()] == ["applied"] * len(deliveries)
    refusals = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    counts = {(r["source"], r["channel"], r["reason"]): r["count"] for r in refusals}
    assert counts == {
        (None, "s3", "no valid push token"): 3,
        (None, "gcs", "no valid push token"): 1,
        (None, "sns", "no valid push token"): 1,
    }


def test_push_answers_carry_request_ids_and_security_headers(
    sqlite_service: Service, s3_bucket: S3Bucket
) -> None:
    """Pushes are answered ahead of the app's router, still inside its middlewares: the
    request id (the client's when it sent one) and the security headers are on every
    answer, accepted or refused; other methods on the same paths go to the router."""
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    accepted = svc.post(
        "s3", one_event(s3_bucket), token=token, headers={"X-Request-Id": "sender-42"}
    )
    assert accepted.status_code == 200
    refused = svc.post("gcs", content=b"{", token="mmp_wrong")
    assert refused.status_code == 401
    for resp in (accepted.answer, refused):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert accepted.answer.headers["x-request-id"] == "sender-42"
    assert len(refused.headers["x-request-id"]) == 16
    url = f"{svc.base}/api/v1/bucket_notifications/s3"
    assert svc.client.head(url).status_code == 200  # MinIO's liveness check
    assert svc.client.get(url).status_code == 405


def test_a_token_only_speaks_for_its_own_bucket(
    sqlite_service: Service, s3_bucket: S3Bucket, s3_server: object, s3_client: object
) -> None:
    svc = sqlite_service
    other = S3Bucket(s3_bucket.server, s3_bucket.client)
    svc.add_bucket_source("mine", s3_bucket)
    svc.add_bucket_source("theirs", other)
    token = svc.push_token("mine")
    other.put("secret/clip.mp4")
    body = s3_event(s3_record(other.name, "secret/clip.mp4", sequencer=next_sequencer()))

    resp = svc.post("s3", body, token=token)

    assert resp.status_code == 200
    assert outcomes(resp) == ["ignored"]
    assert svc.items() == {}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "the body is empty"),
        (b"{not json", "the body is not valid JSON"),
        (b"\xff\xfe garbage", "the body is not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'{"hello": "world"}', "no Records"),
        (b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', "Records[0].s3 is missing"),
        (
            b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
            b' "object": {"key": 7}}}]}',
            "Records[0].s3.object.key is missing or not a string",
        ),
        (
            b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
            b' "object": {"key": "%FF%FE"}}}]}',
            "not UTF-8",
        ),
        (
            b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
            b' "object": {"key": "k", "sequencer": "not-hex"}}}]}',
            "is not a hexadecimal string",
        ),
    ],
)
def test_malformed_bodies_are_400_and_recorded(
    sqlite_service: Service, s3_bucket: S3Bucket, content: bytes, error: str
) -> None:
    svc = sqlite_service
    source = svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")

    resp = svc.post("s3", token=token, content=content)

    assert resp.status_code == 400, resp.text
    assert error in resp.json()["error"]
    assert svc.events() == []
    (refused,) = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    assert (refused["reason"], refused["source"], refused["channel"]) == (
        "malformed body",
        source.name,
        "s3",
    )
    assert error in refused["detail"]


def test_oversized_bodies_are_413(sqlite_service: Service, s3_bucket: S3Bucket) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    big = json.dumps({"Records": [], "pad": "x" * (1024 * 1024)}).encode()
    assert len(big) > 1024 * 1024

    resp = svc.post("s3", token=token, content=big)
    assert resp.status_code == 413
    assert "larger than 1048576 bytes" in resp.json()["error"]

    # Without a Content-Length (chunked), the limit holds while reading.
    def chunks() -> object:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    chunked = httpx.post(
        f"{svc.base}/api/v1/bucket_notifications/s3?token={token}", content=chunks(), timeout=30
    )
    assert chunked.status_code == 413
    # Exactly at the limit is fine (and then malformed: no Records).
    exact = b'{"Records": []' + b" " * (1024 * 1024 - 15) + b"}"
    assert len(exact) == 1024 * 1024
    assert svc.post("s3", token=token, content=exact).status_code == 400
    assert svc.events() == []
    refused = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    assert {r["reason"]: r["count"] for r in refused} == {"body too large": 2, "malformed body": 1}


def test_test_events_are_acknowledged(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")

    direct = svc.post("s3", s3_test_event(s3_bucket.name), token=token)
    assert direct.status_code == 200
    assert outcomes(direct) == ["test"]
    via_sns = svc.post("sns", sns.notification(s3_test_event(s3_bucket.name)), token=token)
    assert via_sns.status_code == 200
    assert outcomes(via_sns) == ["test"]
    # MinIO checks a webhook target with HEAD before it sends anything.
    head = httpx.head(f"{svc.base}/api/v1/bucket_notifications/minio")
    assert head.status_code == 200
    assert [(e.outcome, e.event_type) for e in svc.events()] == [
        ("test", "s3:TestEvent"),
        ("test", "s3:TestEvent"),
    ]


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_subscription_is_confirmed(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer, version: str
) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    confirmation = sns.confirmation(version)
    before = len(sns.confirmed)

    resp = svc.post("sns", confirmation, token=token)

    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["confirmed"]
    assert sns.confirmed[before:] == [
        confirmation["SubscribeURL"].removeprefix(sns.base)  # type: ignore[union-attr]
    ]
    (event,) = svc.events()
    assert (event.outcome, event.event_type) == ("confirmed", "SubscriptionConfirmation")


def test_sns_signatures_are_checked(
    sqlite_service: Service, s3_bucket: S3Bucket, sns: SnsPeer
) -> None:
    svc = sqlite_service
    svc.add_bucket_source("src", s3_bucket)
    token = svc.push_token("src")
    good = sns.notification(one_event(s3_bucket), version="2")

    tampered = {**good, "Message": good["Message"].replace("clip.mp4", "other.mp4")}
    resp = svc.post("sns", tampered, token=token)
    assert resp.status_code == 401
    assert resp.json()["error"] == "bad SNS message signature"

    foreign = {**good, "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/x.pem"}
    resp = svc.post("sns", foreign, token=token)
    assert resp.status_code == 401
    assert "untrusted SNS SigningCertURL" in resp.json()["error"]

    assert svc.post("sns", {**good, "SignatureVersion": "3"}, token=token).status_code == 401
    assert svc.post("sns", {**good, "Signature": "***"}, token=token).status_code == 401
    unsigned_field = {**good, "Timestamp": "2001-01-01T00:00:00.000Z"}
    assert svc.post("sns", unsigned_field, token=token).status_code == 401
    # A confirmation whose SubscribeURL points elsewhere is refused before any fetch.
    confirmation = sns.confirmation()
    confirmation["SubscribeURL"] = "http://169.254.169.254/latest/meta-data/"
    assert svc.post("sns", sns.sign(confirmation), token=token).status_code == 401
    assert svc.items() == {}

    resp = svc.post("sns", good, token=token)
    assert resp.status_code == 200
    assert outcomes(resp) == ["applied"]
    assert set(svc.items()) == {"in/clip.mp4"}
    assert [e.outcome for e in svc.events()] == ["applied"]
    refused = svc.get("events/refusals", svc.viewer_token()).json()["refusals"]
    assert {r["reason"]: r["count"] for r in refused} == {"bad signature": 6}
