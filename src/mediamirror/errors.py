"""One error tree for the whole package.

Library exceptions are translated into these at module boundaries (``raise ... from exc``)
so that the CLI and the API can show users one clear line instead of a traceback.
Each class carries the HTTP status an API handler should answer with.
"""

from __future__ import annotations

from mediamirror.redact import redact


class MediamirrorError(Exception):
    """Root of every error mediamirror raises on purpose."""

    status: int = 500

    def __init__(self, message: str) -> None:
        # Every message may reach a user, a log or the catalog: none carries a secret
        # (a URL's password or signature, a value from the environment).
        message = redact(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MediamirrorError):
    """A setting, a config file or a command-line value is invalid."""

    status = 400


class NotFoundError(MediamirrorError):
    """A named thing (source, folder, job...) does not exist."""

    status = 404


class ConflictError(MediamirrorError):
    """The request conflicts with the current state (name taken, sync already running)."""

    status = 409


class StoreError(MediamirrorError):
    """A store could not be reached, listed or read."""

    status = 502


class CatalogError(MediamirrorError):
    """The catalog database could not be opened or migrated."""


class SyncError(MediamirrorError):
    """A sync could not run to the end."""


class ProcessingError(MediamirrorError):
    """A processor failed on its input; the message says why in one line."""

    status = 422


class TransientProcessingError(ProcessingError):
    """A processor failed for a reason that may go away on retry (network, timeout)."""


class JobError(MediamirrorError):
    """A job could not be queued, claimed or changed."""

    status = 409


class DeliveryError(MediamirrorError):
    """A notification channel (SMTP server, webhook URL) did not take a message.

    ``status`` is the peer's answer when there was one (the webhook's HTTP status, the SMTP
    reply code), stored with the delivery attempt; None when the peer could not be reached.
    An API handler answers ``http_status`` instead: a webhook's 404 is not the API's.
    """

    http_status = 502

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[assignment]  # the peer's status, not ours
