"""Secrets out of every message that leaves the process.

One function, :func:`redact`, is applied where text leaves mediamirror: error messages
(every :class:`~mediamirror.errors.MediamirrorError`), job rows (log tail, message,
error), the CLI's error line, API error bodies and log records. It hides:

- the password of a URL's userinfo (``postgresql://user:***@host``, ``amqp://u:***@h``);
- signatures and credentials in query strings (presigned S3 and GCS URLs);
- every value known to be secret, shown as the ``${VAR}`` it came from: values that
  config.yaml took from ``${VAR}``, environment variables whose names look secret
  (``*KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``...) and the variables that
  sources name as their credentials.

Known secret values live in one process-wide table filled by :func:`remember` (config
loading, opening a store): a job log or an error can come from any thread, and none of
them should need to be handed the list.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping

#: Shorter values are not hidden: masking every "1" or "yes" in a log helps nobody.
MIN_SECRET_LENGTH = 4
MASK = "***"

_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASS$|CREDENTIAL|SIGNATURE", re.I)
# scheme://user:password@host. A password may hold an unescaped '@' (people write them
# so, and drivers accept it), so it runs to the last '@' of the word: hiding a little
# too much beats showing the end of a password.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"]*:)[^\s'\"]+@")
_SIGNED_PARAMS = (
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "Signature",
    "AWSAccessKeyId",
    "x-amz-security-token",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "GoogleAccessId",
    "sig",
    "access_token",
    "token",
)
_QUERY = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(map(re.escape, _SIGNED_PARAMS)) + r")=)[^&\s'\"#;]+",
    re.I,
)

_lock = threading.Lock()
_known: dict[str, str] = {}  # secret value -> what is shown instead
# A pattern matching every known value, with its own copy of the table: rebuilt after a
# change, shared read-only by every thread until the next one.
_snapshot: tuple[re.Pattern[str], dict[str, str]] | None = None


def secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(_SECRET_NAME.search(name))


def remember(value: str | None, name: str | None = None) -> None:
    """Hide ``value`` in every message from now on (as ``${name}`` when named)."""
    global _snapshot
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    shown = f"${{{name}}}" if name else MASK
    with _lock:
        if _known.get(value) == shown:
            return
        _known[value] = shown
        _snapshot = None  # rebuilt on next use


def remember_env(env: Mapping[str, str], names: Iterable[str] = ()) -> None:
    """Hide the values of ``names`` and of every variable whose name looks secret."""
    wanted = set(names)
    for name, value in env.items():
        if name in wanted or secret_name(name):
            remember(value, name)


def _known_values() -> tuple[re.Pattern[str], dict[str, str]] | None:
    global _snapshot
    with _lock:
        if _snapshot is None and _known:
            # Longest first, so a secret containing another is hidden whole.
            values = sorted(_known, key=len, reverse=True)
            _snapshot = (re.compile("|".join(map(re.escape, values))), dict(_known))
        return _snapshot


def redact(text: str) -> str:
    """``text`` without URL passwords, URL signatures or known secret values."""
    if not text:
        return text
    snapshot = _known_values()
    if snapshot is not None:
        pattern, known = snapshot
        text = pattern.sub(lambda m: known[m.group(0)], text)
    text = _USERINFO.sub(lambda m: m.group("head") + MASK + "@", text)
    return _QUERY.sub(lambda m: m.group("head") + MASK, text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)


def redact_url(url: str) -> str:
    """One URL, even one too malformed to parse (``postgresql:/u:pw@h``, ``u:pw@h``):
    whatever stands between the last ':' and the last '@' is taken for a password."""
    text = redact(url)
    left, at, right = text.rpartition("@")
    if not at:
        return text
    head, colon, password = left.rpartition(":")
    if not colon or password.startswith("/") or password == MASK:
        return text
    return f"{head}:{MASK}@{right}"


class RedactingFilter(logging.Filter):
    """Redacts a log record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A bad format: the handler's own report would print the raw arguments to
            # stderr, secrets included. Keep them, redacted, in the message instead.
            message = f"{record.msg} (arguments not matching the format: {record.args!r})"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches the handlers of ``logger`` (the root by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


__all__ = [
    "MASK",
    "RedactingFilter",
    "install_log_filter",
    "redact",
    "redact_optional",
    "redact_url",
    "remember",
    "remember_env",
    "secret_name",
]
