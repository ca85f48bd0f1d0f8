"""Settings: each declared once (name, default, help), read from
defaults < config.yaml < ``MEDIAMIRROR_<NAME>`` environment variables < command-line flags.

This is the only module that reads ``os.environ`` for settings; everything else receives a
:class:`Settings` object (or plain values) as arguments. Any string in config.yaml may be
``${VAR}``: it is replaced by that environment variable when the file is read, so secrets
stay out of the file and out of the catalog.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from mediamirror.errors import ConfigError
from mediamirror.redact import remember

ENV_PREFIX = "MEDIAMIRROR_"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _setting(default: Any, help: str, *, env: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class Settings:
    """Every mediamirror setting. Field metadata holds the help text shown in the docs."""

    home: str = _setting(
        "./mediamirror-data", "Data directory: SQLite catalog, local outputs, sample media."
    )
    database_url: str = _setting(
        "", "Catalog database URL. Empty means SQLite (WAL) at <home>/catalog.db."
    )
    config: str = _setting("", "Path of config.yaml. Empty means <home>/config.yaml.")
    log_level: str = _setting("warning", "Log level: debug, info, warning or error.")
    log_file: str = _setting(
        "",
        "Log file name; each process writes its own file beside it, "
        "<name>-<command>-<host>-<pid>.log, rotated on its own. Empty means "
        "<home>/logs/mediamirror.log; off means stderr only.",
    )
    log_max_bytes: int = _setting(
        10 * 1024 * 1024, "A process's log file is rotated when it would grow past this size."
    )
    log_backups: int = _setting(
        5, "Rotated files kept per process (<file>.1 is the newest); older ones are deleted."
    )
    log_format: str = _setting(
        "text", "Format of log lines, on stderr and in the files: text or json (one object a line)."
    )
    sync_lease_seconds: int = _setting(
        60,
        "A sync holds its source's lease this long between renewals; a crashed sync "
        "gives the source up after it expires (at once if its process is gone on this host).",
    )
    sync_page_size: int = _setting(
        1000, "Keys per listing page; each page is written in one catalog transaction."
    )
    sync_list_width: int = _setting(
        8,
        "Concurrent listing requests of a sync of an S3 source (1 to 16): the bucket is "
        "cut into key ranges at its folders, listed side by side and merged in key order. "
        "1 lists sequentially; local directories are always walked sequentially.",
    )
    large_image_bytes: int = _setting(
        16 * 1024 * 1024,
        "A raster image (jpg, png, tif...) at least this many bytes becomes its own "
        "large-image dataset instead of a frame of an image sequence.",
    )
    large_image_pixels: int = _setting(
        40_000_000,
        "In a source whose images mode is auto, post-processing makes a frame of an image "
        "sequence with at least this many pixels (width x height, read from the image "
        "header) its own large-image dataset. 0 turns this off.",
    )
    auto_postprocess: bool = _setting(
        True, "Queue post-processing jobs for marked datasets at the end of every sync."
    )
    output_store: str = _setting(
        "",
        "Where derived files go (s3://bucket/prefix or file:///path); never a source. "
        "Empty means <home>/outputs.",
    )
    output_endpoint_url: str = _setting("", "S3 API endpoint of the output store, if not AWS.")
    results_store: str = _setting(
        "",
        "Where command processors' results go (results/<dataset path>/). Empty means "
        "the output store.",
    )
    workers: int = _setting(0, "Jobs a local worker runs at once; 0 means the CPU count.")
    job_timeout: int = _setting(3600, "Seconds a job may run before it is stopped and retried.")
    job_max_attempts: int = _setting(3, "Attempts of a job before a transient failure is final.")
    job_retry_intervals: str = _setting(
        "5,30,120", "Seconds to wait before each retry of a job, comma-separated."
    )
    job_lease_seconds: int = _setting(
        30, "A running job's lease; a worker that stops renewing it loses the job to a retry."
    )
    # Celery executor (mediamirror.jobs.executors.celery, mediamirror.jobs.dispatch).
    executor: str = _setting(
        "local",
        "What runs jobs: local (the worker and serve processes claim them from the catalog) "
        "or celery (Celery workers on many machines, fed job ids through broker_url).",
    )
    broker_url: str = _setting(
        "",
        "Celery broker with the celery executor: redis://host:6379/0 or "
        "amqp://user:password@host:5672// (RabbitMQ). Its password is never printed.",
    )
    celery_redispatch_seconds: int = _setting(
        60,
        "Celery executor: a queued job whose message was sent this long ago and not taken "
        "(the broker lost it: flushed or restarted) is sent again; a duplicate is dropped.",
    )
    transcode_preset: str = _setting("medium", "x264 preset used when transcoding videos.")
    transcode_crf: int = _setting(22, "x264 constant rate factor used when transcoding videos.")
    transcode_vfr_fps: float = _setting(
        0.0,
        "Frame rate a variable-frame-rate video is transcoded to (e.g. 30 or 30000/1001), "
        "so that frame N is shown at N / fps. 0 means the stream's real rate.",
    )
    pyramid_max_dimension: int = _setting(
        0, "Largest width or height of a pyramid; bigger images are scaled down. 0: no cap."
    )
    # Bucket notifications (mediamirror.events).
    public_url: str = _setting(
        "",
        "Base URL at which buckets, SNS and Pub/Sub reach this service, used in the push "
        "endpoint URL `source push-token` prints. Empty means http://127.0.0.1:8000.",
    )
    events_max_body_bytes: int = _setting(
        1024 * 1024, "Largest body a push endpoint accepts; a bigger delivery gets 413."
    )
    sns_url_pattern: str = _setting(
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/",
        "SNS messages are trusted only if their SigningCertURL (and the SubscribeURL fetched "
        "to confirm a subscription) match this regular expression.",
    )
    events_batch_size: int = _setting(
        5000,
        "Most recorded bucket events of one source the events applier applies in one transaction.",
    )
    events_apply_delay_seconds: float = _setting(
        0.0,
        "Recorded bucket events are applied no sooner than this many seconds after they "
        "were received (0: at once). Holds events pending, e.g. to gather bigger batches.",
    )
    events_settle_seconds: int = _setting(
        5,
        "Frames of an image sequence arriving by bucket events queue its post-processing "
        "once none arrived for this many seconds; 0 queues it at every frame.",
    )
    # Reliability: store faults and files still being written.
    store_connect_timeout: int = _setting(
        5, "Seconds to wait for an S3 endpoint to accept a connection before retrying."
    )
    store_read_timeout: int = _setting(
        60,
        "Seconds an S3 request may wait for the next bytes of an answer before it is retried; "
        "a stalled endpoint fails after this instead of hanging.",
    )
    store_max_attempts: int = _setting(
        5,
        "Attempts of one S3 request (the first one included) on a 500, 503, throttling, "
        "reset connection or timeout, with exponential backoff, before the operation fails.",
    )
    max_download_bytes: int = _setting(
        20 * 1024**3,
        "Largest file a feed record may download (its original, kept in the output store); "
        "a bigger one fails its job with one line, before the download or as soon as it "
        "passes this size.",
    )
    settle_seconds: int = _setting(
        3,
        "A file of a local-directory source modified less than this many seconds ago may "
        "still be being written: it is catalogued, but its post-processing waits for a later "
        "sync (the dataset stays marked MarkForPostProcess). 0 processes it at once.",
    )
    # Notifications (mediamirror.notify; the email: and notify: blocks hold the rest).
    notify_retry_intervals: str = _setting(
        "30,120,600,3600",
        "Seconds to wait before each new try of a notification a channel did not take, "
        "comma-separated; after the last one the delivery is marked failed.",
    )
    notify_quiet_seconds: int = _setting(
        10,
        "A notification waits until none arrived for this many seconds (at most a minute), "
        "so a burst is counted before it is sent one by one or as one digest.",
    )
    sections: Mapping[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Nested blocks of config.yaml (email, processors, ...).", "skip": True},
    )

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def catalog_url(self) -> str:
        """The database URL in force, defaulting to SQLite under home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home_path / 'catalog.db').resolve()}"

    @property
    def output_url(self) -> str:
        return self.output_store or f"file://{(self.home_path / 'outputs').resolve()}"

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @property
    def notify_backoff(self) -> tuple[float, ...]:
        try:
            return tuple(float(x) for x in self.notify_retry_intervals.split(",") if x.strip())
        except ValueError:
            raise ConfigError(
                f"notify_retry_intervals {self.notify_retry_intervals!r} must be numbers, "
                "comma-separated"
            ) from None

    @property
    def retry_intervals(self) -> tuple[float, ...]:
        try:
            return tuple(float(x) for x in self.job_retry_intervals.split(",") if x.strip())
        except ValueError:
            raise ConfigError(
                f"job_retry_intervals {self.job_retry_intervals!r} must be numbers, comma-separated"
            ) from None

    @property
    def config_path(self) -> Path:
        return Path(self.config).expanduser() if self.config else self.home_path / "config.yaml"


def declared() -> list[dataclasses.Field[Any]]:
    """The settings table: every field a user can set (for docs and validation)."""
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("skip")]


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _coerce(name: str, value: Any, kind: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(value)
        if kind_name == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind_name == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            # Through Fraction: accepts "30000/1001" and refuses nan and inf.
            return float(Fraction(str(value).strip()))
        return str(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ConfigError(f"setting {name!r}: {value!r} is not a valid {kind_name}") from None


def expand_vars(value: Any, env: Mapping[str, str], where: str = "config.yaml") -> Any:
    """Replace ``${VAR}`` in every string of a YAML tree by the environment's value."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in env:
                raise ConfigError(f"{where}: ${{{var}}} is used but not set in the environment")
            remember(env[var], var)  # shown as ${VAR} wherever it would leave the process
            return env[var]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [expand_vars(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_vars(v, env, where) for k, v in value.items()}
    return value


def _read_yaml(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: cannot read config: {first}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return dict(expand_vars(data, env, str(path)))


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check_sections: bool = True,
) -> Settings:
    """Resolve every setting: defaults < config.yaml < environment < ``overrides``.

    ``check_sections=False`` leaves the typed blocks (email, notify) unchecked, for
    ``config check``, which reports them itself beside its other checks.
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name: f for f in declared()}
    # home and config decide where config.yaml is, so resolve them first.
    values: dict[str, Any] = {}
    for name in ("home", "config"):
        raw = overrides.get(name, env.get(env_name(name), known[name].default))
        values[name] = _coerce(name, raw, known[name].type)
    probe = Settings(home=values["home"], config=values["config"])
    data = _read_yaml(probe.config_path, env)
    sections = {k: v for k, v in data.items() if isinstance(v, (dict, list))}
    for key in data:
        if key not in known and key not in sections:
            raise ConfigError(f"{probe.config_path}: unknown setting {key!r}")
    for name, fld in known.items():
        raw = fld.default
        if name in data and name not in sections:
            raw = data[name]
        if env_name(name) in env:
            raw = env[env_name(name)]
        if name in overrides:
            raw = overrides[name]
        values[name] = _coerce(name, raw, fld.type)
    settings = Settings(**values, sections=sections)
    if settings.sync_page_size < 1 or settings.sync_lease_seconds < 1:
        raise ConfigError("sync_page_size and sync_lease_seconds must be positive")
    if not 1 <= settings.sync_list_width <= 16:
        raise ConfigError(f"sync_list_width must be 1 to 16, not {settings.sync_list_width}")
    if min(settings.store_connect_timeout, settings.store_read_timeout) < 1:
        raise ConfigError("store_connect_timeout and store_read_timeout must be positive")
    if settings.store_max_attempts < 1 or settings.settle_seconds < 0:
        raise ConfigError("store_max_attempts must be positive and settle_seconds not negative")
    if settings.transcode_vfr_fps < 0:
        raise ConfigError("transcode_vfr_fps must not be negative (0 means the real rate)")
    if settings.max_download_bytes < 1:
        raise ConfigError("max_download_bytes must be positive")
    if settings.executor not in ("local", "celery"):
        raise ConfigError(f"executor {settings.executor!r} must be local or celery")
    if settings.celery_redispatch_seconds < 1:
        raise ConfigError("celery_redispatch_seconds must be positive")
    if check_sections:
        validate_sections(settings)
    return settings


def validate_sections(settings: Settings) -> None:
    """Check the typed blocks of config.yaml where settings load, so a wrong value stops
    ``serve``, ``worker`` and ``sync`` at start instead of at the first notification."""
    if "email" in settings.sections or "notify" in settings.sections:
        from mediamirror.notify.config import validate  # pydantic only when a block is there

        validate(settings)
    if "feeds" in settings.sections:
        from mediamirror.stores.feed_config import configure

        configure(settings.sections["feeds"])  # checked, and what feed:// stores open with
    if "processors" in settings.sections:
        from mediamirror.jobs.routing import check_queues

        check_queues(settings)  # each processor's `queue:` (celery executor)
