"""The downloader of feed records (stores/http_fetch.py) against a real HTTP server
(tests/feeds/media.py): streamed to ``.part`` and renamed, resumed with Range after a cut-off
body, restarted when Range is ignored, one-line failures that are not retried, size checks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.stores.http_fetch import fetch
from mediamirror.stores.timeouts import StoreTimeouts

from .media import MediaServer, etag_of

#: Random bytes, so a spliced or shifted download never compares equal by chance.
DATA = os.urandom(3 * 1024 * 1024 + 12345)
FAST = StoreTimeouts(connect=2.0, read=5.0)


@pytest.fixture
def clip(media: MediaServer) -> str:
    return media.add("videos/clip.mp4", DATA)


def test_downloads_whole_file_and_reports_progress(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "clip.mp4"
    size = fetch(
        clip,
        dest,
        expected_size=len(DATA),
        timeouts=FAST,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert size == len(DATA)
    assert dest.read_bytes() == DATA
    assert not (tmp_path / "clip.mp4.part").exists()
    assert seen[-1] == (len(DATA), len(DATA))
    assert len(seen) > 1  # streamed in chunks, not read whole
    assert [r.range for r in media.requests_for("videos/clip.mp4")] == [None]


def test_cut_off_body_is_resumed_with_range(media: MediaServer, clip: str, tmp_path: Path) -> None:
    media.cut["videos/clip.mp4"] = 2
    dest = tmp_path / "clip.mp4"
    assert fetch(clip, dest, timeouts=FAST) == len(DATA)
    assert dest.read_bytes() == DATA
    ranges = [r.range for r in media.requests_for("videos/clip.mp4")]
    assert ranges[0] is None and len(ranges) == 3
    # Each retry asked for the rest only: the bytes already on disk were not fetched again.
    assert all(
        r is not None and r.startswith("bytes=") and not r.startswith("bytes=0-")
        for r in ranges[1:]
    )
    # The server's thread counts a write after it returned: it may lag the client a moment.
    deadline = time.monotonic() + 10
    while media.served["videos/clip.mp4"] < len(DATA) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert media.served["videos/clip.mp4"] == len(DATA)


def test_server_ignoring_range_restarts_from_zero(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    media.ignore_range = True
    media.cut["videos/clip.mp4"] = 1
    dest = tmp_path / "clip.mp4"
    assert fetch(clip, dest, timeouts=FAST) == len(DATA)
    # The second answer was the whole file again (200): written from the start, not appended.
    assert dest.read_bytes() == DATA
    assert len(media.requests_for("videos/clip.mp4")) == 2


def test_503_then_success_is_retried(media: MediaServer, clip: str, tmp_path: Path) -> None:
    media.fail_times["videos/clip.mp4"] = 2
    assert fetch(clip, tmp_path / "c.mp4", timeouts=FAST) == len(DATA)
    assert len(media.requests_for("videos/clip.mp4")) == 3


def test_always_503_is_transient_after_the_attempts(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    media.status["videos/clip.mp4"] = 503
    with pytest.raises(TransientProcessingError) as info:
        fetch(clip, tmp_path / "c.mp4", timeouts=FAST, attempts=3)
    assert "failed after 3 attempt(s): HTTP 503" in str(info.value)
    assert len(media.requests_for("videos/clip.mp4")) == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "does not exist (HTTP 404)"), (401, "access refused (HTTP 401)"), (403, "HTTP 403")],
)
def test_missing_or_refused_fails_at_once_in_one_line(
    media: MediaServer, clip: str, tmp_path: Path, status: int, words: str
) -> None:
    media.status["videos/clip.mp4"] = status
    with pytest.raises(ProcessingError) as info:
        fetch(clip + "?X-Amz-Signature=abcdef", tmp_path / "c.mp4", timeouts=FAST)
    assert not isinstance(info.value, TransientProcessingError)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert "abcdef" not in message  # a presigned link's signature is never shown
    assert len(media.requests_for("videos/clip.mp4")) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_is_refused(media: MediaServer, clip: str, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match=r"is 3158073 bytes but the feed says 1000"):
        fetch(clip, tmp_path / "c.mp4", expected_size=1000, max_bytes=None, timeouts=FAST)
    assert list(tmp_path.iterdir()) == []


def test_above_max_bytes_refused_before_downloading(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    with pytest.raises(ProcessingError, match="more than max_download_bytes"):
        fetch(clip, tmp_path / "c.mp4", expected_size=len(DATA), max_bytes=1024, timeouts=FAST)
    assert media.requests_for("videos/clip.mp4") == []  # the feed's size was enough
    seen: list[int] = []
    with pytest.raises(ProcessingError, match="more than max_download_bytes"):
        fetch(
            clip,
            tmp_path / "c.mp4",
            max_bytes=1024,
            timeouts=FAST,
            progress=lambda d, t: seen.append(d),
        )
    assert seen == []  # Content-Length was enough: no byte of the body was taken
    assert list(tmp_path.iterdir()) == []


def test_above_max_bytes_stopped_while_streaming_without_a_length(tmp_path: Path) -> None:
    """A server that sends no length (chunked) is stopped as soon as it passes the limit."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sent: list[int] = []

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * 65536
            try:
                for _ in range(10_000):  # 640 MiB if nobody stops reading
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent.append(len(block))
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/endless"
        with pytest.raises(ProcessingError, match="more than max_download_bytes"):
            fetch(url, tmp_path / "e.bin", max_bytes=2 * 1024 * 1024, timeouts=FAST)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sum(sent) < 100 * 1024 * 1024
    assert list(tmp_path.iterdir()) == []


def test_check_stops_the_download(media: MediaServer, clip: str, tmp_path: Path) -> None:
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ProcessingError("canceled")

    with pytest.raises(ProcessingError, match="canceled"):
        fetch(clip, tmp_path / "c.mp4", timeouts=FAST, check=check)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    from helpers import closed_port

    with pytest.raises(TransientProcessingError, match="connection failed"):
        fetch(f"http://127.0.0.1:{closed_port()}/x.mp4", tmp_path / "x.mp4", attempts=2)


def test_not_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match="only http"):
        fetch("ftp://example.org/x.mp4", tmp_path / "x.mp4")


# -- resuming across calls (a job's next attempt) -----------------------------------------------

SLOW_TO_READ = StoreTimeouts(connect=2.0, read=1.0)


def _fail_half_way(media: MediaServer, path: str, url: str, partial: Path, dest: Path) -> int:
    """One call that receives half the file, then meets only 503s: it fails for now
    (TransientProcessingError) and keeps what came in ``partial``; returns how much."""
    gate = threading.Event()
    media.hold[path] = gate  # half the body, then silence: the client's read times out

    def refuse_the_next_requests() -> None:
        deadline = time.monotonic() + 20
        while media.served[path] < len(DATA) // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        media.status[path] = 503

    helper = threading.Thread(target=refuse_the_next_requests)
    helper.start()
    try:
        with pytest.raises(TransientProcessingError, match="HTTP 503"):
            fetch(url, dest, timeouts=SLOW_TO_READ, attempts=1, partial=partial)
    finally:
        helper.join()
        gate.set()
    del media.hold[path], media.status[path]
    assert not dest.exists()
    return partial.stat().st_size


def test_a_later_call_resumes_what_a_failed_call_kept(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    path = "videos/clip.mp4"
    partial = tmp_path / "partial" / "item-1"
    dest = tmp_path / "scratch" / "clip.mp4"
    dest.parent.mkdir()
    kept = _fail_half_way(media, path, clip, partial, dest)
    assert kept >= len(DATA) // 2
    assert partial.read_bytes() == DATA[:kept]
    before = media.served[path]

    assert fetch(clip, dest, timeouts=FAST, partial=partial) == len(DATA)
    assert dest.read_bytes() == DATA
    last = media.requests_for(path)[-1]
    # Only the rest, and only of the version whose bytes were kept.
    assert last.range == f"bytes={kept}-" and last.if_range == etag_of(DATA)
    deadline = time.monotonic() + 10
    while media.served[path] - before < len(DATA) - kept and time.monotonic() < deadline:
        time.sleep(0.01)
    assert media.served[path] - before == len(DATA) - kept
    assert list(partial.parent.iterdir()) == []  # nothing left behind once complete


def test_a_file_changed_since_is_read_again_whole(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    path = "videos/clip.mp4"
    partial = tmp_path / "partial" / "item-1"
    dest = tmp_path / "clip.mp4"
    _fail_half_way(media, path, clip, partial, dest)
    changed = bytes(b ^ 0xFF for b in DATA)  # same size, other bytes
    media.add(path, changed)
    try:
        assert fetch(clip, dest, timeouts=FAST, partial=partial) == len(changed)
        # If-Range named the old version: the server sent the whole new file, never spliced.
        assert dest.read_bytes() == changed
    finally:
        media.add(path, DATA)


def test_bytes_kept_for_another_url_are_not_used(
    media: MediaServer, clip: str, tmp_path: Path
) -> None:
    partial = tmp_path / "partial" / "item-1"
    _fail_half_way(media, "videos/clip.mp4", clip, partial, tmp_path / "clip.mp4")
    other = media.add("videos/other.mp4", DATA)
    assert fetch(other, tmp_path / "other.mp4", timeouts=FAST, partial=partial) == len(DATA)
    assert [r.range for r in media.requests_for("videos/other.mp4")] == [None]


def test_a_failure_for_good_keeps_nothing(media: MediaServer, clip: str, tmp_path: Path) -> None:
    partial = tmp_path / "partial" / "item-1"
    _fail_half_way(media, "videos/clip.mp4", clip, partial, tmp_path / "clip.mp4")
    media.missing.add("videos/clip.mp4")
    with pytest.raises(ProcessingError, match="does not exist"):
        fetch(clip, tmp_path / "clip.mp4", timeouts=FAST, partial=partial)
    assert list(partial.parent.iterdir()) == []
