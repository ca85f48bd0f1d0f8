"""The service as ASGI application factories, for running it in several processes.

``mediamirror serve --workers N`` runs N processes of the service behind one port
(uvicorn's process manager; a process that dies is replaced). Any ASGI server can run
them the same way, e.g. ``uvicorn --factory mediamirror.web.asgi:app --workers 4`` or
gunicorn with uvicorn's worker class. Each process reads its settings as every command
does (the environment and config.yaml) and runs the API, the push endpoints, the UI and a
local worker (``api_app``: no worker). The scheduler and the SQS consumer run in one
process at a time across all of them, on every machine sharing the catalog
(:mod:`mediamirror.catalog.singleton`).

``serve --workers`` passes ``--access-log`` on to its processes in
``MEDIAMIRROR_SERVE_ACCESS_LOG=1`` (the only variable read here that is not a setting:
uvicorn's own switch does not reach the logging these processes set up).
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from mediamirror import logs
from mediamirror.config import load_settings
from mediamirror.redact import remember_env

#: Set to 1 by ``serve --workers N --access-log``.
ACCESS_LOG_VAR = "MEDIAMIRROR_SERVE_ACCESS_LOG"


def _build(worker: bool) -> FastAPI:
    from mediamirror.catalog import Catalog
    from mediamirror.services import Services
    from mediamirror.web.app import create_app

    settings = load_settings()
    env = dict(os.environ)
    remember_env(env)
    logs.setup(settings, "serve")
    logs.server_loggers(env.get(ACCESS_LOG_VAR) == "1")
    return create_app(Services(Catalog(settings.catalog_url), settings, env), worker=worker)


def app() -> FastAPI:
    """The whole service: API, push endpoints, UI and a local worker."""
    return _build(worker=True)


def api_app() -> FastAPI:
    """The service without a local worker (jobs run elsewhere: ``worker`` processes)."""
    return _build(worker=False)
