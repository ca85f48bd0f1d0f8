"""Ready-to-paste push set-up for one source: which provider sends its bucket's events,
and the commands (or JSON) that make it send them to the source's push URL.

The URL is given whole: with its real token only in the answer that created the token
(shown once), else with the placeholder ``TOKEN``. Nothing here talks to a provider.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from mediamirror.catalog.models import Source
from mediamirror.events.routing import OPTION, endpoint_kind, push_url

PLACEHOLDER = "TOKEN"
#: Every kind of change a sync would see: new and replaced objects, deletions.
S3_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
GCS_EVENTS = "OBJECT_FINALIZE,OBJECT_DELETE,OBJECT_METADATA_UPDATE,OBJECT_ARCHIVE"


@dataclass(frozen=True)
class Snippet:
    """One block to paste: ``language`` is ``shell`` or ``json``."""

    id: str
    title: str
    language: str
    text: str
    help: str
    primary: bool = True


def provider(source: Source) -> str:
    """aws, minio, gcs, do-spaces, s3-compatible (another S3 API), local or feed."""
    if source.kind in {"local", "feed"}:
        return source.kind
    if endpoint_kind(source) == "gcs":
        return "gcs"
    if source.preset in {"minio", "do-spaces"}:
        return str(source.preset)
    if source.endpoint_url and "amazonaws.com" not in source.endpoint_url:
        return "s3-compatible"
    return "aws"


def unsupported(source: Source) -> str | None:
    """Why this source cannot receive pushes (None: it can)."""
    kind = provider(source)
    if kind == "local":
        return "a local directory sends no notifications: give it a schedule instead"
    if kind == "feed":
        return "a feed is polled (its poll_seconds), not pushed: nothing to set up here"
    return None


def has_token(source: Source) -> bool:
    return bool(isinstance(source.options, dict) and source.options.get(OPTION))


def setup(source: Source, base_url: str, token: str | None = None) -> dict[str, Any]:
    """The push set-up of ``source``: URL (real token or ``TOKEN``), provider, snippets."""
    kind = provider(source)
    why = unsupported(source)
    if why is not None:
        return {"supported": False, "provider": kind, "message": why, "has_token": False}
    url = push_url(base_url, source, token or PLACEHOLDER)
    snippets = _snippets(source, kind, url)
    note = None
    if kind == "do-spaces":
        note = (
            "DigitalOcean Spaces sends no bucket notifications: keep this source current "
            "with a schedule (Edit), or route events from another sender to the URL below."
        )
    return {
        "supported": True,
        "provider": kind,
        "has_token": has_token(source) or token is not None,
        "endpoint": url.split("?", 1)[0],
        "url": url,
        "token_shown": token is not None,
        "note": note,
        "snippets": [asdict(s) for s in snippets],
    }


def _snippets(source: Source, kind: str, url: str) -> list[Snippet]:
    if kind == "gcs":
        return gcs_snippets(source, url)
    if kind == "minio":
        return minio_snippets(source, url)
    if kind == "aws":
        return aws_snippets(source, url)
    if kind == "s3-compatible":
        return minio_snippets(source, url) + aws_snippets(source, url, primary=False)
    return [*aws_snippets(source, url, primary=False), *minio_snippets(source, url, False)]


def _slug(source: Source, sep: str = "-") -> str:
    """A name for the provider's objects (topic, target): letters, digits and ``sep``."""
    return "mediamirror" + sep + re.sub(r"[^A-Za-z0-9]+", sep, source.name).strip(sep)


def aws_snippets(source: Source, url: str, primary: bool = True) -> list[Snippet]:
    """S3 cannot POST to a URL itself: it publishes to an SNS topic, subscribed to it."""
    region = source.region if source.region and source.region != "auto" else "us-east-1"
    topic = _slug(source)
    arn = f"arn:aws:sns:{region}:ACCOUNT_ID:{topic}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "SNS:Publish",
                "Resource": arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{source.bucket}"}},
            }
        ],
    }
    topic_cmd = "\n".join(
        [
            f"aws sns create-topic --region {region} --name {topic}",
            f"aws sns set-topic-attributes --region {region} --topic-arn {arn} \\",
            "  --attribute-name Policy \\",
            f"  --attribute-value {shlex.quote(json.dumps(policy))}",
        ]
    )
    config: dict[str, Any] = {"Id": topic, "TopicArn": arn, "Events": S3_EVENTS}
    if source.prefix:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": source.prefix}]}}
    notification = json.dumps({"TopicConfigurations": [config]}, indent=2)
    protocol = "https" if url.startswith("https:") else "http"
    return [
        Snippet(
            "aws-topic",
            "1. An SNS topic S3 may publish to",
            "shell",
            topic_cmd,
            "Replace ACCOUNT_ID with your AWS account id (aws sts get-caller-identity).",
            primary,
        ),
        Snippet(
            "aws-notification",
            "2. The bucket notification configuration (notification.json)",
            "json",
            notification,
            "Save as notification.json, then: aws s3api put-bucket-notification-configuration "
            f"--bucket {source.bucket} --notification-configuration file://notification.json "
            "(it replaces the bucket's current configuration: merge any you already have).",
            primary,
        ),
        Snippet(
            "aws-sns",
            "3. The SNS subscription to this service",
            "shell",
            f"aws sns subscribe --region {region} --topic-arn {arn} \\\n"
            f"  --protocol {protocol} --notification-endpoint {shlex.quote(url)}",
            "mediamirror confirms the subscription itself and checks every message's "
            "signature. SNS needs a URL it can reach (public_url).",
            primary,
        ),
    ]


def minio_snippets(source: Source, url: str, primary: bool = True) -> list[Snippet]:
    target = _slug(source, "_")
    where = f"ALIAS/{source.bucket}"
    prefix = f" --prefix {shlex.quote(source.prefix)}" if source.prefix else ""
    text = "\n".join(
        [
            f"mc admin config set ALIAS notify_webhook:{target} endpoint={shlex.quote(url)}",
            "mc admin service restart ALIAS",
            f"mc event add {where} arn:minio:sqs::{target}:webhook --event put,delete{prefix}",
        ]
    )
    return [
        Snippet(
            "minio",
            "MinIO webhook target and bucket event",
            "shell",
            text,
            "ALIAS is your mc alias for this MinIO server (mc alias list). The restart "
            "loads the new webhook target.",
            primary,
        )
    ]


def gcs_snippets(source: Source, url: str) -> list[Snippet]:
    topic = _slug(source)
    prefix = f" \\\n  --object-prefix={shlex.quote(source.prefix)}" if source.prefix else ""
    return [
        Snippet(
            "gcs-notification",
            "1. A Pub/Sub topic and the bucket's notification",
            "shell",
            f"gcloud pubsub topics create {topic}\n"
            f"gcloud storage buckets notifications create gs://{source.bucket} \\\n"
            f"  --topic={topic} --payload-format=json \\\n"
            f"  --event-types={GCS_EVENTS}{prefix}",
            "Run with a project where you may create topics and change the bucket.",
        ),
        Snippet(
            "gcs-subscription",
            "2. The push subscription to this service",
            "shell",
            f"gcloud pubsub subscriptions create {topic}-push --topic={topic} \\\n"
            f"  --push-endpoint={shlex.quote(url)} --ack-deadline=60",
            "Pub/Sub retries a delivery until this service answers 200.",
        ),
    ]
