"""Amazon SNS HTTP(S) subscriptions: signature check, subscription confirmation, unwrapping.

SNS signs each message with the key of a certificate it publishes at ``SigningCertURL``.
Only certificates from URLs matching the ``sns_url_pattern`` setting are trusted (by
default ``https://sns.<region>.amazonaws.com/...``), and the same pattern guards the
``SubscribeURL`` fetched to confirm a subscription, so a forged message can make the
service fetch nothing else. SignatureVersion 1 signs with SHA1, version 2 with SHA256.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mediamirror.errors import ConfigError
from mediamirror.events import eventbridge, s3
from mediamirror.events.model import Action, EventRejected, ObjectEvent

TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_CERT_CACHE_SIZE = 32


def is_envelope(body: Any) -> bool:
    return isinstance(body, dict) and body.get("Type") in TYPES and "TopicArn" in body


def string_to_sign(body: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: ``name\\nvalue\\n`` for each signed field."""
    fields = _NOTIFICATION_FIELDS if body.get("Type") == "Notification" else _CONFIRMATION_FIELDS
    out = []
    for name in fields:
        value = body.get(name)
        if value is None:
            if name == "Subject":
                continue  # signed only when present
            raise EventRejected(f"SNS {body.get('Type')} without {name}")
        if not isinstance(value, str):
            raise EventRejected(f"SNS field {name} is not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


class SnsVerifier:
    """Checks SNS signatures with certificates fetched (and cached) from trusted URLs."""

    def __init__(self, url_pattern: str, timeout: float = 5.0) -> None:
        try:
            self.pattern = re.compile(url_pattern)
        except re.error as exc:
            raise ConfigError(f"sns_url_pattern is not a valid regular expression: {exc}") from exc
        self.timeout = timeout
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def trusted(self, url: Any) -> bool:
        # Control characters and spaces are never part of a URL SNS publishes; a pattern
        # ending in ``.*`` would let them through to the HTTP client, which refuses them.
        return (
            isinstance(url, str)
            and not any(ord(c) <= 32 or ord(c) == 127 for c in url)
            and self.pattern.match(url) is not None
        )

    def _certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cert = self._certs.get(url)
        if cert is not None:
            return cert
        try:
            resp = httpx.get(url, timeout=self.timeout, follow_redirects=False)
            resp.raise_for_status()
            cert = x509.load_pem_x509_certificate(resp.content)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise EventRejected(f"cannot fetch the SNS signing certificate: {exc}", 401) from exc
        with self._lock:
            if len(self._certs) >= _CERT_CACHE_SIZE:
                self._certs.clear()
            self._certs[url] = cert
        return cert

    def verify(self, body: dict[str, Any]) -> None:
        """Raise :class:`EventRejected` (401) unless SNS signed this message."""
        version = str(body.get("SignatureVersion", ""))
        if version not in _HASHES:
            raise EventRejected(f"unsupported SNS SignatureVersion {version!r}", 401)
        cert_url = body.get("SigningCertURL") or body.get("SigningCertUrl")
        if not self.trusted(cert_url):
            raise EventRejected(f"untrusted SNS SigningCertURL {str(cert_url)[:200]!r}", 401)
        try:
            signature = base64.b64decode(str(body.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise EventRejected("SNS Signature is not base64", 401) from None
        data = string_to_sign(body)
        cert = self._certificate(str(cert_url))
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise EventRejected("the SNS signing certificate is not valid now", 401)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise EventRejected("the SNS signing certificate has no RSA key", 401)
        try:
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise EventRejected("bad SNS message signature", 401) from None

    def confirm(self, body: dict[str, Any]) -> str:
        """Confirm a subscription by fetching its SubscribeURL; returns the topic."""
        url = body.get("SubscribeURL")
        if not self.trusted(url):
            raise EventRejected(f"untrusted SNS SubscribeURL {str(url)[:200]!r}", 401)
        try:
            resp = httpx.get(str(url), timeout=self.timeout, follow_redirects=False)
            resp.raise_for_status()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise EventRejected(f"cannot confirm the SNS subscription: {exc}", 502) from exc
        return str(body.get("TopicArn", ""))


def unwrap(body: dict[str, Any], channel: str = "sns") -> list[ObjectEvent]:
    """The S3 events inside an SNS Notification (its Message is the S3 JSON)."""
    message = body.get("Message")
    if not isinstance(message, str):
        raise EventRejected("SNS Notification without a Message")
    try:
        inner = json.loads(message)
    except (ValueError, RecursionError):
        raise EventRejected("the SNS Message is not JSON (or is nested too deeply)") from None
    if isinstance(inner, dict) and s3.is_test(inner):
        return [s3.test_event(inner, channel)]
    if eventbridge.is_event(inner):  # an EventBridge rule targeting the topic
        return eventbridge.parse(inner, channel)
    return s3.parse(inner, channel)


def control_event(body: dict[str, Any], channel: str = "sns") -> ObjectEvent:
    """A (un)subscription confirmation, recorded like an event without a key."""
    return ObjectEvent(channel, str(body.get("Type")), Action.TEST, "", "")
