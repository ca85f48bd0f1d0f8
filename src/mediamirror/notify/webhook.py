"""The webhook channel: an HTTP POST of the event, signed, as JSON or a Slack payload.

Signed like the webhooks people already verify (Stripe, GitHub): with a ``secret``, the
request carries ``X-Mediamirror-Timestamp: <unix seconds>`` and ``X-Mediamirror-Signature:
sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``; a receiver recomputes it over
the raw body and refuses an old timestamp, so a captured request cannot be replayed.
Anything but a 2xx answer is a :class:`~mediamirror.errors.DeliveryError` with the status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from mediamirror import __version__
from mediamirror.errors import DeliveryError
from mediamirror.notify.config import WebhookConfig
from mediamirror.notify.message import Message
from mediamirror.redact import redact_url

TIMEOUT = 10.0
#: Slack refuses a section block whose text is longer than this.
SLACK_SECTION_CHARS = 3000
TIMESTAMP_HEADER = "X-Mediamirror-Timestamp"
SIGNATURE_HEADER = "X-Mediamirror-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Mediamirror-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn gives &, < and > a meaning of their own.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(m: Message) -> dict[str, Any]:
    """A Slack incoming-webhook payload: the subject as fallback text, the body as blocks."""
    body = _slack_escape(m.text.strip())
    if len(body) > SLACK_SECTION_CHARS - 20:
        body = body[: SLACK_SECTION_CHARS - 20].rstrip() + "\n…"
    return {
        "text": m.subject,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": m.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        ],
    }


class WebhookChannel:
    """POSTs each message to one URL."""

    def __init__(self, config: WebhookConfig, name: str | None = None) -> None:
        self.config = config
        self.name = name or f"webhook:{config.host}"

    @property
    def url(self) -> str:
        return self.config.url

    def body(self, m: Message) -> bytes:
        data = slack_payload(m) if self.config.format == "slack" else m.payload
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()

    def headers(self, body: bytes, now: float | None = None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"mediamirror/{__version__}",
        }
        if self.config.secret:
            timestamp = str(int(time.time() if now is None else now))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self.config.secret, timestamp, body)
        return headers

    def send(self, m: Message) -> None:
        body = self.body(m)
        response = self._request("POST", content=body, headers=self.headers(body))
        if not response.is_success:
            raise DeliveryError(
                f"webhook {redact_url(self.url)} answered {_status_line(response)}",
                status=response.status_code,
            )

    def check(self) -> str:
        """Ask the URL with HEAD (OPTIONS when HEAD is not allowed), posting no event."""
        response = self._request("HEAD")
        if response.status_code == 405:
            response = self._request("OPTIONS")
        # 404/410: nothing there; 5xx: broken. 401/403/405 are what a receiver that
        # verifies signatures or takes only POST answers: it is there.
        if response.status_code in (404, 410) or response.status_code >= 500:
            raise DeliveryError(
                f"webhook {redact_url(self.url)} answered {_status_line(response)}",
                status=response.status_code,
            )
        return (
            f"{redact_url(self.url)} reachable ({response.request.method} answered "
            f"{response.status_code}; nothing posted)"
        )

    def _request(self, method: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(method, self.url, timeout=TIMEOUT, **kwargs)
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DeliveryError(f"cannot reach webhook {redact_url(self.url)}: {reason}") from None


def _status_line(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".rstrip()
