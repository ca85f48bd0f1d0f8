"""An SQS consumer: long-polls a queue receiving S3 event notifications (sent by the bucket
directly, through an SNS topic the queue subscribes to, or by an EventBridge rule) and
records them for the events applier (:mod:`mediamirror.events.inbox`). With several
service processes on one catalog, one of them polls (the lease ``sqs-consumer``; see
:mod:`mediamirror.catalog.singleton`).

A message is deleted once its events are recorded (the catalog then holds them: the
applier applies them, after a restart too); when recording fails it stays in the queue
and comes back after its visibility timeout. A message that can never be parsed is
recorded as ``rejected`` and deleted, so it cannot come back forever.

The queue is configured in config.yaml (the queue's access policy is the trust boundary,
so SNS envelopes arriving through it are unwrapped without a signature check)::

    sqs:
      - queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/media-events
        region: eu-west-1
        # endpoint_url, profile, access_key_env, secret_key_env, wait_seconds (1-20),
        # max_messages (1-10), visibility_timeout, sources: [names]  (all optional)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mediamirror.config import Settings
from mediamirror.errors import ConfigError, StoreError
from mediamirror.events import eventbridge, inbox, s3, sns
from mediamirror.events.apply import EventApplier
from mediamirror.events.model import EventRejected, ObjectEvent
from mediamirror.events.record import record_rejection

log = logging.getLogger(__name__)
CHANNEL = "sqs"
_BACKOFF = (1, 2, 5, 10, 30)


@dataclass(frozen=True)
class QueueConfig:
    """One ``sqs:`` entry of config.yaml."""

    queue_url: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    wait_seconds: int = 20
    max_messages: int = 10
    visibility_timeout: int | None = None
    sources: tuple[str, ...] = ()


_FIELDS = {f for f in QueueConfig.__dataclass_fields__}


def _queue(entry: Any, index: int) -> QueueConfig:
    where = f"config.yaml sqs[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with queue_url")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    url = entry.get("queue_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: queue_url must be the queue's http(s) URL")
    values = dict(entry)
    try:
        for name in ("wait_seconds", "max_messages", "visibility_timeout"):
            if values.get(name) is not None:
                values[name] = int(values[name])
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: wait_seconds, max_messages, visibility_timeout are numbers"
        ) from None
    values["sources"] = tuple(str(s) for s in values.get("sources") or ())
    cfg = QueueConfig(**values)
    if not 0 <= cfg.wait_seconds <= 20 or not 1 <= cfg.max_messages <= 10:
        raise ConfigError(f"{where}: wait_seconds must be 0-20 and max_messages 1-10")
    return cfg


def queues(settings: Settings) -> list[QueueConfig]:
    """The SQS queues of config.yaml's ``sqs`` section (a list, or one mapping)."""
    section = settings.sections.get("sqs")
    if section is None:
        return []
    entries = section if isinstance(section, list) else [section]
    return [_queue(e, i) for i, e in enumerate(entries)]


def parse_message(body: str) -> list[ObjectEvent]:
    """The events of one SQS message body: S3 event JSON, or an SNS envelope of it."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise EventRejected("the message body is not JSON (or is nested too deeply)") from None
    if sns.is_envelope(doc):
        if doc.get("Type") != "Notification":
            return [sns.control_event(doc, CHANNEL)]
        return sns.unwrap(doc, CHANNEL)
    if eventbridge.is_event(doc):  # an EventBridge rule targeting the queue
        return eventbridge.parse(doc, CHANNEL)
    return s3.parse(doc, CHANNEL)


def _client(cfg: QueueConfig, env: Mapping[str, str]) -> Any:
    def secret(name: str | None) -> str | None:
        if not name:
            return None
        if not env.get(name):
            raise ConfigError(f"environment variable {name} (SQS credentials) is not set")
        return env[name]

    session = boto3.session.Session(
        profile_name=cfg.profile,
        aws_access_key_id=secret(cfg.access_key_env),
        aws_secret_access_key=secret(cfg.secret_key_env),
    )
    region = cfg.region or _region_of(cfg.queue_url)
    config = Config(
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=5,
        read_timeout=cfg.wait_seconds + 10,
    )
    return session.client("sqs", endpoint_url=cfg.endpoint_url, region_name=region, config=config)


def _region_of(queue_url: str) -> str | None:
    """``https://sqs.eu-west-1.amazonaws.com/...`` -> eu-west-1."""
    host = queue_url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    return parts[1] if len(parts) > 3 and parts[0] == "sqs" else None


class SqsConsumer:
    """Long-polls one queue and records what it receives."""

    def __init__(self, applier: EventApplier, cfg: QueueConfig) -> None:
        self.applier = applier
        self.cfg = cfg
        self.client = _client(cfg, applier.services.env)

    def poll_once(
        self, wait_seconds: int | None = None, stop: threading.Event | None = None
    ) -> int:
        """One receive: record, then delete what was recorded. Returns messages received.
        Messages received once ``stop`` is set are left alone: they come back after their
        visibility timeout, to this or another consumer."""
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "QueueUrl": cfg.queue_url,
            "MaxNumberOfMessages": cfg.max_messages,
            "WaitTimeSeconds": cfg.wait_seconds if wait_seconds is None else wait_seconds,
        }
        if cfg.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = cfg.visibility_timeout
        try:
            messages = self.client.receive_message(**kwargs).get("Messages", [])
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot receive from {cfg.queue_url}: {exc}") from exc
        if stop is not None and stop.is_set():
            return len(messages)
        done = [m["ReceiptHandle"] for m in messages if self._handled(m)]
        self._delete(done)
        return len(messages)

    def _handled(self, message: dict[str, Any]) -> bool:
        """One message of a batch; a failure of its own (a catalog error, say) keeps only
        it in the queue: the batch's other messages are still applied and deleted. A
        message that fails every time ends in the queue's dead-letter queue, if the
        queue has a redrive policy."""
        try:
            return self.handle(str(message.get("Body", "")))
        except Exception:
            log.exception(
                "SQS message %s of %s not applied", message.get("MessageId"), self.cfg.queue_url
            )
            return False

    def handle(self, body: str) -> bool:
        """Record one message's events; True when it may be deleted from the queue
        (a failure to record raises: the message stays)."""
        try:
            events = parse_message(body)
        except EventRejected as exc:
            record_rejection(self.applier.catalog, CHANNEL, str(exc))
            return True
        sources = self.applier.sources
        inbox.record(
            self.applier, events, lambda fresh: sources.by_bucket(self.cfg.sources, fresh=fresh)
        )
        return True

    def _delete(self, receipts: list[str]) -> None:
        for i in range(0, len(receipts), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(receipts[i : i + 10])
            ]
            try:
                resp = self.client.delete_message_batch(
                    QueueUrl=self.cfg.queue_url, Entries=entries
                )
            except (BotoCoreError, ClientError) as exc:
                # They come back after the visibility timeout and are then duplicates.
                log.warning("cannot delete messages from %s: %s", self.cfg.queue_url, exc)
                continue
            for failed in resp.get("Failed", []):
                log.warning("SQS kept message %s: %s", failed.get("Id"), failed.get("Message"))

    def run(self, stop: threading.Event, active: Callable[[], bool] | None = None) -> None:
        """Poll until ``stop`` is set; back off while the queue cannot be reached.
        ``active`` (when given) says whether this process may poll now: only the
        holder of the SQS consumer lease does, so one consumer runs across processes."""
        failures = 0
        while not stop.is_set():
            if active is not None and not active():
                stop.wait(1.0)
                continue
            try:
                self.poll_once(stop=stop)
                failures = 0
            except Exception as exc:  # the consumer must outlive any one failure
                if stop.is_set():
                    return  # the service is stopping: its peers may be gone already
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                log.warning(
                    "SQS consumer of %s: %s (retrying in %s s)", self.cfg.queue_url, exc, delay
                )
                stop.wait(delay)
