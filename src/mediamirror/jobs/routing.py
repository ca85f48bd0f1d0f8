"""Which broker queue a processor's jobs go to (celery executor).

A processor's ``queue:`` key in config.yaml names it; every other processor's jobs go to
:data:`DEFAULT_QUEUE`. One default queue rather than one queue per processor: a worker
started without ``--queues`` serves every processor nobody routed elsewhere, a new
processor needs no new worker, and only the heavy ones (a GPU command) get a queue of
their own::

    processors:
      pose: {command: "python pose.py {input} {output_dir}", queue: gpu}
"""

from __future__ import annotations

import re
from typing import Any

from mediamirror.config import Settings
from mediamirror.errors import ConfigError

DEFAULT_QUEUE = "mediamirror"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: Any, where: str) -> str:
    """A queue name (letters, digits, ``.``, ``_``, ``-``), or ConfigError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{where}: queue {name!r} must be a name of letters, digits, '.', '_' or '-'"
        )
    return name


def queues_of(settings: Settings) -> dict[str, str]:
    """Processor name -> queue, for the processors of config.yaml with a ``queue:`` key."""
    configured: Any = settings.sections.get("processors") or {}
    routes: dict[str, str] = {}
    if not isinstance(configured, dict):
        return routes
    for name, conf in configured.items():
        if isinstance(conf, dict) and conf.get("queue") is not None:
            routes[str(name)] = check_name(conf["queue"], f"processor {name!r}")
    return routes


def queue_of(settings: Settings, processor: str) -> str:
    return queues_of(settings).get(processor, DEFAULT_QUEUE)


def check_queues(settings: Settings) -> None:
    """Validate every ``queue:`` key where settings load (ConfigError with one line)."""
    queues_of(settings)


def parse_queues(text: str | None) -> list[str]:
    """``video,pyramid,gpu`` -> names; empty -> the default queue."""
    names = [q.strip() for q in (text or "").split(",") if q.strip()]
    return [check_name(q, "--queues") for q in names] or [DEFAULT_QUEUE]
