"""S3 events shaped exactly as Amazon EventBridge delivers them (the envelope of the
account's default bus with S3's ``detail``), to an SQS queue or an API destination."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus


def eventbridge_event(
    bucket: str,
    key: str,
    detail_type: str = "Object Created",
    *,
    size: int | None = None,
    etag: str | None = None,
    sequencer: str | None = None,
    source: str = "aws.s3",
) -> dict[str, Any]:
    """One EventBridge event about ``key`` (URL-encoded as S3 encodes event keys)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="")}
    if detail_type == "Object Created":
        obj.update(size=size if size is not None else 1, etag=etag or secrets.token_hex(16))
    obj["version-id"] = secrets.token_urlsafe(24)
    if sequencer is not None:
        obj["sequencer"] = sequencer
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": obj,
        "request-id": secrets.token_hex(8).upper(),
        "requester": "123456789012",
        "source-ip-address": "127.0.0.1",
        "reason": "PutObject" if detail_type == "Object Created" else "DeleteObject",
    }
    if detail_type == "Object Deleted":
        detail["deletion-type"] = "Permanently Deleted"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }
