"""Setting sources up through the API: the connection check (every refusal in one line,
nothing saved), what a removal removes, and push set-up (URL shown once, rotation
invalidates the old token, provider snippets, the source's recent events)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from helpers import S3Bucket, S3Server, closed_port
from mediamirror.catalog.models import SOURCES

from .support import ACCESS_KEY_ENV, SECRET_KEY, SECRET_KEY_ENV, Deployment, assert_error

pytestmark = pytest.mark.timeout(120)
CHECK = "/api/v1/sources/check"


def source_count(api: Deployment) -> int:
    with api.catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(SOURCES)).scalar_one())


def s3_body(server: S3Server, bucket: S3Bucket, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": bucket.url(),
        "preset": "minio",
        "endpoint_url": server.endpoint,
        **extra,
    }


def test_a_good_bucket_is_checked_and_nothing_is_saved(
    api: Deployment, s3_server: S3Server, s3_client: Any
) -> None:
    bucket = S3Bucket(s3_server, s3_client)
    bucket.put_many([f"clips/c{i:02d}.mp4" for i in range(12)] + ["notes/readme.txt"])
    before = source_count(api)

    answer = api.admin.post(CHECK, json=s3_body(s3_server, bucket, "checked", include=r"\.mp4$"))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is True, body
    assert (body["keys"], body["matching"]) == (13, 12)
    assert body["message"].startswith("13 keys seen in "), body
    assert "12 of them pass the include/exclude filters" in body["message"]
    assert body["sample"] == [f"clips/c{i:02d}.mp4" for i in range(5)]
    assert 0 <= body["seconds"] < 15
    assert source_count(api) == before  # a check saves nothing
    assert api.viewer.get("/api/v1/sources/checked").status_code == 404


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"endpoint_url": "http://127.0.0.1:{closed}"}, "cannot reach http://127.0.0.1:"),
        ({"url": "s3://no-such-bucket-here"}, "bucket 'no-such-bucket-here' does not exist"),
        ({"include": "(["}, "is not a valid regular expression"),
        ({"access_key_env": "MM_NOT_SET_ANYWHERE"}, "MM_NOT_SET_ANYWHERE"),
        ({"name": "sample"}, "a source named 'sample' already exists"),
        ({"mount": "/sample/inside"}, "overlaps source 'sample'"),
        ({"schedule": "every day"}, "'every day' is not a valid cron expression"),
        ({"url": "feed://nowhere", "preset": None, "endpoint_url": None}, "nowhere"),
    ],
)
def test_every_refusal_is_one_line_and_nothing_is_saved(
    api: Deployment,
    s3_server: S3Server,
    s3_client: Any,
    change: dict[str, Any],
    fragment: str,
) -> None:
    bucket = S3Bucket(s3_server, s3_client)
    body = {**s3_body(s3_server, bucket, "refused"), **change}
    if "{closed}" in str(body.get("endpoint_url")):
        body["endpoint_url"] = body["endpoint_url"].format(closed=closed_port())
    before = source_count(api)

    answer = api.admin.post(CHECK, json=body)

    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["ok"] is False, verdict
    assert set(verdict) == {"ok", "message"}
    assert fragment in verdict["message"], verdict
    assert "\n" not in verdict["message"] and "Traceback" not in verdict["message"]
    assert source_count(api) == before


def test_access_denied_is_named_and_no_secret_is_shown(
    api: Deployment, s3_auth_server: S3Server
) -> None:
    """The IAM-enforcing server refuses keys it never issued."""
    body = {
        "name": "denied",
        "url": "s3://anything",
        "preset": "minio",
        "endpoint_url": s3_auth_server.endpoint,
        "access_key_env": ACCESS_KEY_ENV,
        "secret_key_env": SECRET_KEY_ENV,
    }
    answer = api.admin.post(CHECK, json=body).json()
    assert answer["ok"] is False
    assert "access denied" in answer["message"] or "InvalidAccessKeyId" in answer["message"]
    assert SECRET_KEY not in json.dumps(answer)


def test_checking_needs_an_admin(api: Deployment) -> None:
    body = {"name": "x", "url": "s3://b"}
    assert_error(api.viewer.post(CHECK, json=body), 403)
    assert_error(api.anon.post(CHECK, json=body), 401)


def test_a_source_with_a_schedule_is_added(
    api: Deployment, s3_server: S3Server, s3_client: Any
) -> None:
    bucket = S3Bucket(s3_server, s3_client)
    body = s3_body(s3_server, bucket, "scheduled", schedule="*/15 * * * *")
    created = api.admin.post("/api/v1/sources", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["schedule"] == "*/15 * * * *"
    removal = api.viewer.get("/api/v1/sources/scheduled/removal").json()
    assert (removal["folders"], removal["items"], removal["mount"]) == (0, 0, "/scheduled")
    assert "Nothing in s3://" in removal["message"]
    api.admin.delete("/api/v1/sources/scheduled")


def test_what_a_removal_removes(api: Deployment) -> None:
    removal = api.viewer.get("/api/v1/sources/sample/removal").json()
    assert removal["mount"] == "/sample"
    assert removal["folders"] > 3 and removal["items"] > 10
    assert f"{removal['items']:,} items" in removal["message"]


def _s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key, "size": 1, "eTag": "abc", "sequencer": "0A"},
                },
            }
        ]
    }


def test_push_url_is_shown_once_and_rotation_invalidates_the_old_token(
    api: Deployment, s3_server: S3Server, s3_client: Any
) -> None:
    bucket = S3Bucket(s3_server, s3_client)
    bucket.put("in/a.txt")
    name = "pushed"
    body = s3_body(s3_server, bucket, name, url=bucket.url("in"))
    assert api.admin.post("/api/v1/sources", json=body).status_code == 201
    try:
        before = api.viewer.get(f"/api/v1/sources/{name}/push").json()
        assert before["supported"] and before["provider"] == "minio"
        assert before["has_token"] is False and before["token_shown"] is False
        assert before["url"].endswith("/api/v1/bucket_notifications/s3?token=TOKEN")
        assert_error(api.viewer.post(f"/api/v1/sources/{name}/push-token"), 403)

        first = api.admin.post(f"/api/v1/sources/{name}/push-token").json()
        token1 = first["url"].split("token=", 1)[1]
        assert token1.startswith("mmp_") and first["token_shown"] is True
        minio = next(s for s in first["snippets"] if s["id"] == "minio")
        assert first["url"] in minio["text"] and "mc event add" in minio["text"]
        assert "--prefix in/" in minio["text"]

        later = api.viewer.get(f"/api/v1/sources/{name}/push").json()
        assert later["has_token"] is True and token1 not in json.dumps(later)

        second = api.admin.post(f"/api/v1/sources/{name}/push-token").json()
        token2 = second["url"].split("token=", 1)[1]
        assert token2 != token1
        push = "/api/v1/bucket_notifications/s3"
        event = _s3_event(bucket.name, "in/a.txt")
        assert api.anon.post(f"{push}?token={token1}", json=event).status_code == 401
        answer = api.anon.post(f"{push}?token={token2}", json=event)
        assert answer.status_code == 200, answer.text

        events = api.viewer.get(f"/api/v1/sources/{name}/events").json()
        assert events["total"] == 1 and events["events"][0]["key"] == "in/a.txt"
        # Recorded, then applied (or still waiting to be): never refused.
        assert events["events"][0]["outcome"] not in {"rejected", "error"}
        refusals = events["refusals"]
        assert refusals == [] or all(r["source"] in (None, name) for r in refusals)
    finally:
        api.admin.delete(f"/api/v1/sources/{name}")


def test_snippets_for_aws_and_gcs_and_none_for_a_local_directory(api: Deployment) -> None:
    created = []
    try:
        for body in (
            {"name": "on-aws", "url": "s3://aws-media/videos", "region": "eu-west-1"},
            {"name": "on-gcs", "url": "gs://gcs-media/survey"},
        ):
            answer = api.admin.post("/api/v1/sources", json={**body, "check": False})
            assert answer.status_code == 201, answer.text
            created.append(body["name"])
        aws = api.viewer.get("/api/v1/sources/on-aws/push").json()
        assert aws["provider"] == "aws"
        texts = {s["id"]: s["text"] for s in aws["snippets"]}
        config = json.loads(texts["aws-notification"])["TopicConfigurations"][0]
        assert config["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
        assert config["Filter"]["Key"]["FilterRules"][0]["Value"] == "videos/"
        assert "arn:aws:sns:eu-west-1:" in config["TopicArn"]
        assert "aws sns subscribe" in texts["aws-sns"] and aws["url"] in texts["aws-sns"]

        gcs = api.viewer.get("/api/v1/sources/on-gcs/push").json()
        assert gcs["provider"] == "gcs" and "/bucket_notifications/gcs?token=TOKEN" in gcs["url"]
        texts = {s["id"]: s["text"] for s in gcs["snippets"]}
        assert (
            "gcloud storage buckets notifications create gs://gcs-media"
            in texts["gcs-notification"]
        )
        assert "--object-prefix=survey/" in texts["gcs-notification"]
        assert f"--push-endpoint='{gcs['url']}'" in texts["gcs-subscription"]

        for body in (
            {
                "name": "on-spaces",
                "url": "s3://spaces-media",
                "preset": "do-spaces",
                "region": "fra1",
            },
            {
                "name": "on-other",
                "url": "s3://other-media",
                "endpoint_url": "http://s3.lab.test:9000",
            },
        ):
            answer = api.admin.post("/api/v1/sources", json={**body, "check": False})
            assert answer.status_code == 201, answer.text
            created.append(body["name"])
        spaces = api.viewer.get("/api/v1/sources/on-spaces/push").json()
        assert spaces["provider"] == "do-spaces" and "schedule" in spaces["note"]
        assert not any(s["primary"] for s in spaces["snippets"])
        other = api.viewer.get("/api/v1/sources/on-other/push").json()
        assert other["provider"] == "s3-compatible"
        primary = [s["id"] for s in other["snippets"] if s["primary"]]
        assert primary == ["minio"] and len(other["snippets"]) == 4

        local = api.viewer.get("/api/v1/sources/sample/push").json()
        assert local["supported"] is False and "local directory" in local["message"]
        assert_error(api.admin.post("/api/v1/sources/sample/push-token"), 400, "local")
    finally:
        for name in created:
            api.admin.delete(f"/api/v1/sources/{name}")


def test_a_feed_is_checked_by_its_first_page(tmp_path: Path) -> None:
    """A feed:// source: the CMS's first page is fetched (its records counted), the
    whole feed is not walked, and nothing is saved; a CMS that is down is named."""
    from feeds.cms import CmsServer
    from mediamirror.catalog.db import Catalog
    from mediamirror.config import Settings, expand_vars
    from mediamirror.source_check import check_new_source
    from mediamirror.sources import list_sources
    from mediamirror.stores.feed_config import configure

    cms = CmsServer()
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    feeds = {"premiere": expand_vars(cms.feed_block(), cms.env)}
    configure(feeds)
    settings = Settings(store_max_attempts=1, sections={"feeds": feeds})
    try:
        with cms.running():
            for i in range(7):
                cms.add(f"r{i}", f"clip {i}", f"{cms.url}/media/{i}.mp4", size=10)
            cms.max_first = 3  # pages of 3 records: the check reads the first only
            result = check_new_source(
                catalog, "cms", "feed://premiere", env=cms.env, settings=settings
            )
            assert result.ok, result
            assert result.keys == 3 and "3 records seen in" in result.message
            assert cms.page_requests() == 1
            missing = check_new_source(
                catalog, "cms", "feed://absent", env=cms.env, settings=settings
            )
            assert not missing.ok and "absent" in missing.message
        down = check_new_source(catalog, "cms", "feed://premiere", env=cms.env, settings=settings)
        assert not down.ok and "could not be reached" in down.message
        assert list_sources(catalog) == []
    finally:
        catalog.close()
