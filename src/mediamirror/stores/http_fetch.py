"""Downloading one file over HTTP(S): streamed, resumed, bounded, checked.

A feed record's file lives at a plain URL (the CMS's own storage, a CDN, a presigned
link). :func:`fetch` copies it to a local file without ever holding it in memory: bytes go
to ``dest.part``, which is renamed to ``dest`` only once complete, so a half-written file
never passes for a download. A dropped connection, a timeout, a 5xx or a body cut off
half-way is tried again with backoff, and resumed with an HTTP ``Range`` request when the
server honours it (206); a server that ignores ranges (200) is read again from the start.

Given a ``partial`` path, the bytes of a download that failed for now (the job is retried
later) stay there with the file's validator (its strong ``ETag`` or ``Last-Modified``) in
``partial.json``; the next call resumes from them with ``Range`` and ``If-Range``, so a job's
next attempt fetches only the rest, and a file changed meanwhile is read again whole (the
server answers 200). Without a validator nothing is kept: bytes of two versions are never
spliced.

What cannot get better by trying again fails at once with one line (``ProcessingError``):
a 404, a 401/403, another 4xx, a file larger than ``max_bytes`` (refused before the first
byte when the server says its length, and as soon as more arrives otherwise) or whose
length differs from ``expected_size``. Transient failures raise
``TransientProcessingError`` once the attempts are used, so the job system retries the job
later with its own backoff.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.stores.timeouts import StoreTimeouts

__all__ = ["fetch"]

#: Seconds to wait before the 2nd, 3rd... attempt (the last value repeats).
_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)
#: Retried: the server is busy or had a hiccup.
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Retry(Exception):
    """One attempt failed in a way worth another try."""


def where(url: str) -> str:
    """The URL as messages show it: no query string (a presigned link's signature) and no
    user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _size_text(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _refuse_large(url: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ProcessingError(
            f"{where(url)} is {_size_text(size)}, more than max_download_bytes "
            f"({_size_text(max_bytes)}): not downloaded"
        )


def fetch(
    url: str,
    dest: Path,
    *,
    headers: Mapping[str, str] | None = None,
    expected_size: int | None = None,
    max_bytes: int | None = None,
    timeouts: StoreTimeouts | None = None,
    attempts: int = 5,
    progress: Callable[[int, int | None], None] | None = None,
    check: Callable[[], None] | None = None,
    partial: Path | None = None,
) -> int:
    """Stream ``url`` to ``dest`` and return its size in bytes (see the module docstring).

    ``headers`` go with every request (the CMS's token: pass values registered with
    :func:`mediamirror.redact.remember`). ``progress(done, total)`` is called as bytes
    arrive (``total`` None when unknown); ``check()`` is called between chunks and before
    each retry, and may raise to stop (a canceled job). ``partial``: where an unfinished
    download is kept between calls (module docstring)."""
    if urlsplit(url).scheme.lower() not in {"http", "https"}:
        raise ProcessingError(f"cannot download {where(url)!r}: only http(s) URLs are supported")
    if expected_size is not None:
        _refuse_large(url, expected_size, max_bytes)
    timeouts = timeouts or StoreTimeouts()
    timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)
    part = partial if partial is not None else dest.with_name(dest.name + ".part")
    state = _State(part, where(url) if partial is not None else None)
    base = {**(headers or {}), "Accept-Encoding": "identity"}
    failures = 0
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            # A round that received bytes costs no attempt (a long file over a flaky line
            # gets there), but the rounds are bounded all the same.
            for _ in range(max(attempts, 1) * 10):
                if check is not None:
                    check()
                before = state.have
                try:
                    total = _attempt(client, url, part, base, state, max_bytes, progress, check)
                except _Retry as exc:
                    if state.have <= before:
                        failures += 1
                    if failures >= attempts:
                        raise TransientProcessingError(
                            f"download of {where(url)} failed after {failures} attempt(s): {exc}"
                        ) from None
                    time.sleep(_BACKOFF[min(failures, len(_BACKOFF)) - 1] if failures else 0.0)
                    continue
                _finish(url, part, dest, total, expected_size)
                state.forget()
                return total
            raise TransientProcessingError(
                f"download of {where(url)} made too little progress; will retry"
            )
    except TransientProcessingError:
        if not state.keep():  # kept for the next attempt when it can be resumed safely
            state.forget()
        raise
    except BaseException:
        state.forget()
        raise


class _State:
    """What survives between attempts: bytes already in ``part``, whether the server may be
    asked for the rest with a Range request, and the file's validator. With an ``origin``
    (a ``partial`` path was given) a previous call's bytes are taken up when its sidecar
    says they are of this URL and names their version."""

    def __init__(self, part: Path, origin: str | None) -> None:
        self.part = part
        self.sidecar = part.with_name(part.name + ".json")
        self.origin = origin
        self.have = 0
        self.ranges = True
        self.validator: str | None = None
        if origin is not None and self._resumable():
            self.have = part.stat().st_size
        else:
            self.forget()

    def _resumable(self) -> bool:
        try:
            kept = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(kept, dict) or kept.get("origin") != _digest(self.origin or ""):
            return False
        validator = kept.get("validator")
        if not isinstance(validator, str) or not validator or not self.part.is_file():
            return False
        self.validator = validator
        return True

    def seen(self, validator: str | None) -> None:
        """The answer's validator: recorded at once, so the bytes that follow can be taken
        up even after a crash."""
        if validator == self.validator:
            return
        self.validator = validator
        if self.origin is None:
            return
        if validator is None:
            self.sidecar.unlink(missing_ok=True)
            return
        self.sidecar.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"origin": _digest(self.origin), "validator": validator})
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(body)
        os.replace(tmp, self.sidecar)

    def keep(self) -> bool:
        """Leave the bytes for the next call; False when they could not be resumed."""
        return self.origin is not None and self.validator is not None and self.have > 0

    def forget(self) -> None:
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.have = 0


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _validator(resp: httpx.Response) -> str | None:
    """A validator ``If-Range`` may carry: a strong ETag, else Last-Modified."""
    etag = str(resp.headers.get("ETag", "")).strip()
    if etag and not etag.startswith("W/"):
        return etag
    return str(resp.headers.get("Last-Modified", "")).strip() or None


def _attempt(
    client: httpx.Client,
    url: str,
    part: Path,
    base: dict[str, str],
    state: _State,
    max_bytes: int | None,
    progress: Callable[[int, int | None], None] | None,
    check: Callable[[], None] | None,
) -> int:
    """One GET: appends to ``part`` and returns the total size once it is complete."""
    headers = dict(base)
    if state.have and state.ranges:
        headers["Range"] = f"bytes={state.have}-"
        if state.validator:
            # The rest of this version only: a changed file comes back whole (200).
            headers["If-Range"] = state.validator
    try:
        with client.stream("GET", url, headers=headers) as resp:
            total = _start(url, resp, part, state, max_bytes)
            state.seen(_validator(resp))
            part.parent.mkdir(parents=True, exist_ok=True)
            with part.open("ab") as fh:
                # As it arrives (no chunk_size): a body cut off mid-way keeps every byte that
                # came, so the resumed request asks only for the rest.
                for chunk in resp.iter_raw():
                    fh.write(chunk)
                    fh.flush()  # on disk for the next attempt, even after a SIGKILL
                    state.have += len(chunk)
                    if max_bytes is not None:
                        _refuse_large(url, state.have, max_bytes)
                    if progress is not None:
                        progress(state.have, total)
                    if check is not None:
                        check()
    except httpx.TimeoutException as exc:
        raise _Retry(f"no answer within the timeout ({type(exc).__name__})") from None
    except httpx.RemoteProtocolError:
        raise _Retry("the connection closed before the file was complete") from None
    except httpx.TransportError as exc:
        raise _Retry(f"connection failed ({type(exc).__name__})") from None
    if total is not None and state.have < total:
        raise _Retry(f"the body stopped at {state.have} of {total} bytes")
    return state.have if total is None else total


def _start(
    url: str, resp: httpx.Response, part: Path, state: _State, max_bytes: int | None
) -> int | None:
    """Decide from the status and headers what this answer's body is; returns the file's
    total size when known. The ``.part`` file is emptied when the answer starts over."""
    status = resp.status_code
    if status == 416 and state.have:
        # Asked for the bytes after what we hold, and there are none: complete already,
        # unless the file changed; then start over.
        match = re.fullmatch(r"bytes\s+\*/(\d+)", resp.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == state.have:
            return state.have
        _restart(part, state, ranges=False)
        raise _Retry("the server refused to resume (HTTP 416)")
    if status in {401, 403}:
        raise ProcessingError(f"{where(url)}: access refused (HTTP {status}); check the token")
    if status == 404 or status == 410:
        raise ProcessingError(f"{where(url)} does not exist (HTTP {status})")
    if status in _RETRY_STATUS or status >= 500:
        raise _Retry(f"HTTP {status}")
    if status >= 400 or status < 200 or status not in {200, 206}:
        raise ProcessingError(f"{where(url)}: unexpected answer HTTP {status}")
    length = _int(resp.headers.get("Content-Length"))
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
        if match is None or int(match.group(1)) != state.have:
            # Not the part we asked for: never splice it; read the whole file again.
            _restart(part, state, ranges=False)
            raise _Retry("the server answered another byte range than asked")
        total = None if match.group(3) == "*" else int(match.group(3))
    else:
        if state.have:
            _restart(part, state, ranges=False)  # the range was ignored: a whole new body
        total = length
    if total is not None:
        _refuse_large(url, total, max_bytes)
    return total


def _restart(part: Path, state: _State, *, ranges: bool) -> None:
    part.unlink(missing_ok=True)
    state.have = 0
    state.ranges = ranges
    state.validator = None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _finish(url: str, part: Path, dest: Path, total: int, expected_size: int | None) -> None:
    if not part.exists():
        part.parent.mkdir(parents=True, exist_ok=True)
        part.touch()  # an empty file is a file
    if expected_size is not None and total != expected_size:
        raise ProcessingError(
            f"{where(url)} is {total} bytes but the feed says {expected_size}: "
            "not kept (an incomplete or replaced file)"
        )
    try:
        os.replace(part, dest)
    except OSError:  # ``partial`` on another file system than the job's scratch folder
        shutil.move(part, dest)
