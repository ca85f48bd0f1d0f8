"""Helpers of the bucket-notification tests: the app served by uvicorn in this process, a
local "SNS" peer (certificate and SubscribeURL over http://127.0.0.1), and payloads shaped
exactly like those AWS S3, MinIO, SNS and Google Cloud Pub/Sub send.

Nothing here mocks mediamirror: events go over HTTP to the real app, objects live in
moto's S3 server, SQS messages in moto's SQS, and catalog probes read the database the
app writes.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import uvicorn
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from helpers import AWS_ENV, S3Bucket, free_port
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.config import load_settings
from mediamirror.jobs.model import JOBS
from mediamirror.services import Services
from mediamirror.web.app import create_app
from mediamirror.web.models import EVENTS

#: HMAC keys of a gs:// source pointed at moto (any value works there).
GCS_ENV = {"GS_ACCESS_KEY_ID": "testing", "GS_SECRET_ACCESS_KEY": "testing"}

# -- sequencers --------------------------------------------------------------------------------

_SEQ = itertools.count(0x0055AED6DCD90281E5)


def next_sequencer() -> str:
    """A new, increasing S3 sequencer (uppercase hex, as S3 sends them)."""
    return f"{next(_SEQ):018X}"


# -- S3 / MinIO payloads -----------------------------------------------------------------------


def s3_record(
    bucket: str,
    key: str,
    event_name: str = "ObjectCreated:Put",
    *,
    size: int | None = None,
    etag: str | None = None,
    sequencer: str | None = None,
    minio: bool = False,
) -> dict[str, Any]:
    """One record as AWS S3 (or MinIO, with ``s3:`` event names) sends it."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="")}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    if minio:
        obj.update({"contentType": "video/mp4", "userDefined": {}, "versionId": "1"})
    if sequencer is not None:
        obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.0" if minio else "2.1",
        "eventSource": "minio:s3" if minio else "aws:s3",
        "awsRegion": "" if minio else "us-east-1",
        "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": ("s3:" + event_name) if minio else event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-request-id": secrets.token_hex(8).upper(),
            "x-amz-id-2": base64.b64encode(secrets.token_bytes(32)).decode(),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "mediamirror",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def minio_event(record: dict[str, Any]) -> dict[str, Any]:
    """A MinIO webhook body: top-level EventName and Key (bucket/key, decoded) + Records."""
    bucket = record["s3"]["bucket"]["name"]
    from urllib.parse import unquote_plus

    key = unquote_plus(record["s3"]["object"]["key"])
    return {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [record]}


def s3_test_event(bucket: str) -> dict[str, Any]:
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": datetime.now(UTC).isoformat(),
        "Bucket": bucket,
        "RequestId": secrets.token_hex(8).upper(),
        "HostId": base64.b64encode(secrets.token_bytes(32)).decode(),
    }


def gcs_push(
    bucket: str,
    key: str,
    event_type: str,
    generation: int,
    *,
    metageneration: int = 1,
    size: int = 0,
    md5: bytes = b"",
    overwritten_by: int | None = None,
) -> dict[str, Any]:
    """A Pub/Sub push delivery of a Cloud Storage notification (payload JSON_API_V1)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resource = {
        "kind": "storage#object",
        "id": f"{bucket}/{key}/{generation}",
        "name": key,
        "bucket": bucket,
        "generation": str(generation),
        "metageneration": str(metageneration),
        "contentType": "video/mp4",
        "timeCreated": now,
        "updated": now,
        "storageClass": "STANDARD",
        "size": str(size),
        "md5Hash": base64.b64encode(md5).decode(),
        "etag": base64.b64encode(f"{generation}{metageneration}".encode()).decode(),
        "crc32c": "AAAAAA==",
    }
    attributes = {
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
        "eventType": event_type,
        "payloadFormat": "JSON_API_V1",
        "bucketId": bucket,
        "objectId": key,
        "objectGeneration": str(generation),
        "eventTime": now,
    }
    if overwritten_by is not None:
        attributes["overwrittenByGeneration"] = str(overwritten_by)
    return {
        "message": {
            "attributes": attributes,
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "messageId": str(secrets.randbelow(10**16)),
            "message_id": "same",
            "publishTime": now,
            "publish_time": now,
        },
        "subscription": "projects/mm-test/subscriptions/mediamirror-push",
    }


# -- SNS -----------------------------------------------------------------------------------------


def _sns_string_to_sign(msg: Mapping[str, Any]) -> bytes:
    """Written from the AWS documentation, independently of the code under test."""
    if msg["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{msg[n]}\n" for n in names if n in msg).encode()


class SnsPeer:
    """Plays SNS's part over http://127.0.0.1: serves the signing certificate, answers
    SubscribeURL requests (remembering them) and signs messages with its key."""

    TOPIC = "arn:aws:sns:us-east-1:123456789012:media-events"

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.confirmed: list[str] = []
        self.cert_fetches = 0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith(".pem"):
                    peer.cert_fetches += 1
                    body = peer.pem
                elif self.path.startswith("/confirm"):
                    peer.confirmed.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.port}"

    @property
    def url_pattern(self) -> str:
        return rf"^http://127\.0\.0\.1:{self.port}/"

    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-{self.port}.pem"

    def sign(self, msg: dict[str, Any], version: str = "1") -> dict[str, Any]:
        msg = {**msg, "SignatureVersion": version, "SigningCertURL": self.cert_url()}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(_sns_string_to_sign(msg), padding.PKCS1v15(), algorithm)
        msg["Signature"] = base64.b64encode(signature).decode()
        return msg

    def notification(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        """A signed Notification carrying ``message`` (an S3 event) as SNS delivers it."""
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": secrets.token_hex(16),
                "TopicArn": self.TOPIC,
                "Subject": "Amazon S3 Notification",
                "Message": json.dumps(message),
                "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                "UnsubscribeURL": f"{self.base}/unsubscribe",
            },
            version,
        )

    def confirmation(self, version: str = "1") -> dict[str, Any]:
        token = secrets.token_hex(32)
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": secrets.token_hex(16),
                "Token": token,
                "TopicArn": self.TOPIC,
                "Message": f"You have chosen to subscribe to the topic {self.TOPIC}.",
                "SubscribeURL": f"{self.base}/confirm?Action=ConfirmSubscription&Token={token}",
                "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            },
            version,
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the app, served -----------------------------------------------------------------------------


@dataclass
class Service:
    """The app for one catalog, served by uvicorn in a thread of this process."""

    home: Path
    database_url: str
    env: dict[str, str]
    services: Services
    server: uvicorn.Server
    thread: threading.Thread
    base: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.client.close()
        self.catalog.close()

    # sources and tokens

    def add_source(self, name: str, url: str, **options: Any) -> Any:
        from mediamirror.sources import add_source

        return add_source(self.catalog, name, url, env=self.env, **options)

    def add_bucket_source(self, name: str, bucket: S3Bucket, sub: str = "", **opts: Any) -> Any:
        return self.add_source(name, bucket.url(sub), **{**bucket.options, **opts})

    def push_token(self, name: str) -> str:
        from mediamirror.events.routing import create_push_token

        return create_push_token(self.catalog, name)[1]

    def viewer_token(self) -> str:
        from mediamirror import tokens

        return tokens.create(self.catalog, "viewer", "events-test")

    # requests

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        settle: bool = True,
    ) -> Any:
        """POST a delivery. With ``settle`` (the default) an answer that recorded events
        is followed until the applier applied them: the returned :class:`Settled` shows
        each event's final outcome (its ``answer`` is what the endpoint said)."""
        params = {"token": token} if token else None
        url = f"{self.base}/api/v1/bucket_notifications/{path}"
        if content is None:
            content = json.dumps(body).encode()
        jobs_before = self.last_job_id()
        resp = self.client.post(url, content=content, params=params, headers=dict(headers or {}))
        if not settle or resp.status_code != 200:
            return resp
        return self.settled(resp, jobs_before)

    def last_job_id(self) -> int:
        with self.catalog.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(JOBS.c.id), 0))).scalar_one())

    def settled(self, resp: httpx.Response, jobs_before: int, timeout: float = 30) -> Settled:
        """Wait until every event ``resp`` recorded has its final outcome."""
        answer = resp.json()
        if "results" not in answer:
            return Settled(resp, answer)
        assert all(r["outcome"] != "pending" for r in answer["results"])
        ids = [r["id"] for r in answer["results"] if r["outcome"] == "recorded"]

        def final() -> dict[int, Any] | None:
            with self.catalog.read() as conn:
                rows = {r.id: r for r in conn.execute(select(EVENTS).where(EVENTS.c.id.in_(ids)))}
            done = len(rows) == len(ids) and all(r.outcome != "pending" for r in rows.values())
            return rows if done else None

        rows = self.wait_for(final, timeout, "the recorded events to be applied") if ids else {}
        results = []
        for given in answer["results"]:
            if given["id"] not in rows:
                results.append(given)
                continue
            row = rows[given["id"]]
            result = {**given, "outcome": row.outcome, "detail": row.detail, "jobs": []}
            if row.outcome == "applied" and row.source_id is not None:
                folder = self.folder_of(row.source_id, row.key)
                if folder is not None and (folder.meta or {}).get("type"):
                    result["dataset"] = folder.path
                    result["jobs"] = [j.id for j in self.jobs_of(folder.id) if j.id > jobs_before]
            results.append(result)
        return Settled(resp, {**answer, "outcomes": _counts(results), "results": results})

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return self.client.get(
            f"{self.base}/api/v1/{path}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )

    # catalog probes

    def items(self) -> dict[str, Any]:
        with self.catalog.read() as conn:
            rows = conn.execute(select(ITEMS).order_by(ITEMS.c.source_id, ITEMS.c.key)).all()
        return {r.key: r for r in rows}

    def items_of(self, source_id: int) -> dict[str, Any]:
        with self.catalog.read() as conn:
            rows = conn.execute(select(ITEMS).where(ITEMS.c.source_id == source_id)).all()
        return {r.key: r for r in rows}

    def folder(self, path: str) -> Any:
        with self.catalog.read() as conn:
            return conn.execute(select(FOLDERS).where(FOLDERS.c.path == path)).first()

    def folder_of(self, source_id: int, key: str) -> Any:
        with self.catalog.read() as conn:
            return conn.execute(
                select(FOLDERS)
                .join(ITEMS, ITEMS.c.folder_id == FOLDERS.c.id)
                .where(ITEMS.c.source_id == source_id, ITEMS.c.key == key)
            ).first()

    def jobs_of(self, folder_id: int) -> list[Any]:
        with self.catalog.read() as conn:
            return list(
                conn.execute(
                    select(JOBS).where(
                        JOBS.c.target_type == "folder", JOBS.c.target_id == folder_id
                    )
                )
            )

    def events(self) -> list[Any]:
        with self.catalog.read() as conn:
            return list(conn.execute(select(EVENTS).order_by(EVENTS.c.id)))

    def wait_for(self, check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
            time.sleep(0.05)


@dataclass
class Settled:
    """A push's answer with each recorded event's final outcome, read from the events
    log once applied (dataset and jobs from the catalog: the jobs queued since the
    POST); ``answer`` is the endpoint's own response."""

    answer: httpx.Response
    body: dict[str, Any]

    @property
    def status_code(self) -> int:
        return self.answer.status_code

    @property
    def text(self) -> str:
        return json.dumps(self.body)

    def json(self) -> dict[str, Any]:
        return self.body


def _counts(results: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def start_service(
    root: Path,
    database_url: str,
    *,
    sns_url_pattern: str,
    sections: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Service:
    """Build ``create_app(Services(...), worker=False)`` and serve it until it answers."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    if sections:
        (home / "config.yaml").write_text(yaml.safe_dump(dict(sections)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    env.update(AWS_ENV)
    env.update(GCS_ENV)
    overrides = {
        "home": str(home),
        "database_url": database_url,
        "sns_url_pattern": sns_url_pattern,
        **settings,
    }
    svc = Services(Catalog(database_url), load_settings(overrides, env=env), env)
    app = create_app(svc, worker=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    service = Service(home, database_url, env, svc, server, thread, base)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            service.stop()
            raise RuntimeError(f"the app did not answer on {base}")
        time.sleep(0.05)


def listed(bucket: S3Bucket, key: str) -> dict[str, Any]:
    """The object as the bucket lists it (what a sync sees)."""
    resp = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=key, MaxKeys=1)
    obj = resp["Contents"][0]
    assert obj["Key"] == key
    return {
        "size": obj["Size"],
        "etag": obj["ETag"].strip('"'),
        "last_modified": obj["LastModified"],
    }


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def outcomes(resp: Any) -> list[str]:
    return [r["outcome"] for r in resp.json()["results"]]
