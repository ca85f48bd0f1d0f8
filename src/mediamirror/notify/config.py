"""Typed ``email:`` and ``notify:`` blocks of config.yaml.

The ``email:`` block is the one PREMIERE users already have (from_addr, to_addrs,
smtp_server, smtp_port, password), accepted unchanged, plus ``username`` and ``security``.
A wrong value is a :class:`~mediamirror.errors.ConfigError` naming the file, the key path
(``email.smtp_port``) and what was expected; :func:`validate` runs when settings load, so
``serve``, ``worker`` and ``sync`` fail at start rather than at the first notification.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mediamirror.errors import ConfigError
from mediamirror.redact import remember

if TYPE_CHECKING:
    from mediamirror.config import Settings

Kind = Literal["dataset.ready", "job.failed", "sync.failed", "sync.finished"]
Security = Literal["starttls", "ssl", "none"]
DEFAULT_KINDS: list[Kind] = ["dataset.ready", "job.failed", "sync.failed"]
#: Keys whose value is a secret: an error names the key, never shows the value.
SECRET_KEYS = frozenset({"password", "secret"})
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


class _Block(BaseModel):
    # A misspelt key (smtp_prot) is an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_or_many(value: Any) -> Any:
    """``to_addrs: me@example.org`` means a list of one."""
    return [value] if isinstance(value, str) else value


def _address(value: str) -> str:
    value = value.strip()
    if not _ADDRESS.fullmatch(value):
        raise ValueError("expected an email address like name@example.org")
    return value


Address = Annotated[str, AfterValidator(_address)]


class EmailConfig(_Block):
    """Where email notifications go and how to reach the SMTP server."""

    from_addr: Address
    to_addrs: list[Address] = Field(min_length=1)
    smtp_server: str = Field(min_length=1)
    smtp_port: int = Field(default=587, ge=1, le=65535)
    password: str | None = Field(default=None, repr=False)
    username: str | None = None
    # None: SSL on port 465, otherwise STARTTLS when the server offers it.
    security: Security | None = None
    timeout: float = Field(default=30, gt=0)

    one_recipient = field_validator("to_addrs", mode="before")(_one_or_many)

    @field_validator("password", "username", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `password: ""` (or an empty ${VAR}) means no login, like no password at all.
        return None if value == "" else value

    @model_validator(mode="after")
    def _username_defaults_to_sender(self) -> EmailConfig:
        if self.username is None:
            object.__setattr__(self, "username", self.from_addr)
        return self

    @property
    def mode(self) -> Security | None:
        """The security in force: the configured one, or ``ssl`` on port 465."""
        if self.security is None and self.smtp_port == 465:
            return "ssl"
        return self.security


class WebhookConfig(_Block):
    """One webhook URL events are POSTed to."""

    url: str
    secret: str | None = Field(default=None, repr=False)
    format: Literal["json", "slack"] = "json"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class NotifyConfig(_Block):
    """Which events notify, how they are grouped, and the webhooks."""

    on: list[Kind] = Field(default_factory=lambda: list(DEFAULT_KINDS))
    digest_minutes: int = Field(default=0, ge=0)
    storm_threshold: int = Field(default=20, ge=1)
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    one_kind = field_validator("on", mode="before")(_one_or_many)


def _expected(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required, missing"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _describe(section: str, error: Any, model: type[BaseModel]) -> str:
    loc = [str(p) for p in error["loc"]]
    path = section
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    text = f"{path}: {_expected(error)}"
    if error["type"] == "extra_forbidden" and len(loc) == 1:
        text += f" (expected one of: {', '.join(model.model_fields)})"
    elif error["type"] != "missing" and not SECRET_KEYS & set(loc):
        text += f" (got {error['input']!r})"
    return text


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], section: str, raw: Any, where: str) -> M:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {section}: expected a mapping of keys, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(section, e, model) for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None


def _notify_block(raw: Any) -> Any:
    # YAML 1.1 reads a bare `on:` key as the boolean True: it is the `on` list here.
    if isinstance(raw, dict) and True in raw and "on" not in raw:
        raw = {("on" if k is True else k): v for k, v in raw.items()}
    return raw


def email_config(settings: Settings) -> EmailConfig | None:
    """The ``email:`` block, or None when there is none (no email channel)."""
    raw = settings.sections.get("email")
    if raw is None:
        return None
    conf = _parse(EmailConfig, "email", raw, str(settings.config_path))
    # A password written into config.yaml itself (not a ${VAR}) is hidden from output too.
    remember(conf.password)
    return conf


def notify_config(settings: Settings) -> NotifyConfig:
    """The ``notify:`` block with its defaults (all defaults when there is none)."""
    raw = settings.sections.get("notify")
    if raw is None:
        return NotifyConfig()
    conf = _parse(NotifyConfig, "notify", _notify_block(raw), str(settings.config_path))
    for hook in conf.webhooks:
        remember(hook.secret)
    return conf


def validate(settings: Settings) -> None:
    """Check the ``email:`` and ``notify:`` blocks; raise ConfigError on the first wrong one."""
    email_config(settings)
    notify_config(settings)
