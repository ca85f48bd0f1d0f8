"""What a notification says: a subject, a plain-text and an HTML body, and a JSON payload.

Composed from the notification row alone (its ``facts`` hold everything, see
notify/outbox.py), so sending needs no query. Links point at the web UI's real routes
(web/ui/static/js/app.js): ``/ui/datasets/<folder id>`` for a dataset, ``/ui/jobs?state=error``
where a failed job and its log are shown, ``/api/v1/jobs/<id>/log`` for the log itself,
``/ui/sources`` for a source's sync runs. Every value that came from a bucket (a key, a
reason, a log line) is escaped in the HTML part and stripped of line breaks in the subject.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mediamirror.notify.recipients import META_KEY, address

PREFIX = "[mediamirror]"
#: Where the service answers when ``public_url`` is not set (the setting's documented default).
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
#: Ready datasets a digest lists by name; the rest are counted.
DIGEST_READY_LISTED = 50
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

Notification = Mapping[str, Any]


@dataclass(frozen=True)
class Message:
    """One message for every channel: email uses subject/text/html, webhooks the payload."""

    subject: str
    text: str
    html: str
    payload: dict[str, Any] = field(default_factory=dict)
    #: Addresses the email also goes to, besides ``to_addrs``: the dataset's own
    #: ``notify`` address (notify/recipients.py). Never set on a digest.
    recipients: tuple[str, ...] = ()


# -- small formatters --------------------------------------------------------------------------


def base_url(public_url: str | None) -> str:
    return (public_url or DEFAULT_PUBLIC_URL).rstrip("/")


def one_line(value: Any) -> str:
    """A value fit for a subject or a list line: no line breaks or control characters."""
    return _CONTROL.sub(" ", str(value)).strip()


def human_size(size: Any) -> str | None:
    if not isinstance(size, int | float) or size < 0:
        return None
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return None  # pragma: no cover (the loop always returns)


def human_duration(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float) or seconds < 0:
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(float(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def human_fps(fps: Any) -> str | None:
    # -1 is the catalog's "take the native rate at post-processing": not known yet.
    if not isinstance(fps, int | float) or fps <= 0:
        return None
    return f"{fps:.3f}".rstrip("0").rstrip(".") + " fps"


def _count(value: Any) -> str | None:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def _facts(n: Notification) -> Mapping[str, Any]:
    facts = n.get("facts")
    return facts if isinstance(facts, Mapping) else {}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# -- links -------------------------------------------------------------------------------------


def links(n: Notification, public_url: str | None) -> dict[str, str]:
    """The pages a notification points at, by name (dataset, job_log, jobs, sources)."""
    base = base_url(public_url)
    out: dict[str, str] = {}
    if n.get("folder_id") is not None:
        out["dataset"] = f"{base}/ui/datasets/{n['folder_id']}"
    if n.get("kind") == "job.failed":
        out["jobs"] = f"{base}/ui/jobs?state=error"
        if n.get("job_id") is not None:
            out["job_log"] = f"{base}/api/v1/jobs/{n['job_id']}/log"
    if str(n.get("kind", "")).startswith("sync."):
        out["sources"] = f"{base}/ui/sources"
    return out


_LINK_LABELS = {
    "dataset": "Dataset",
    "job_log": "Job log",
    "jobs": "Failed jobs",
    "sources": "Sources",
}


# -- facts as (label, value) rows --------------------------------------------------------------


def _dataset_rows(facts: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    width, height = facts.get("width"), facts.get("height")
    resolution = f"{width}x{height}" if width and height else None
    return [
        ("Type", facts.get("type")),
        ("Duration", human_duration(facts.get("duration"))),
        ("Frame rate", human_fps(facts.get("fps"))),
        ("Resolution", resolution),
        ("Frames", _count(facts.get("frames"))),
        ("Size", human_size(facts.get("size"))),
        ("Source", facts.get("source")),
    ]


def _ready_rows(n: Notification) -> list[tuple[str, str | None]]:
    facts = _facts(n)
    took = human_duration(facts.get("seconds"))
    processor = facts.get("processor")
    done = f"{processor} in {took}" if processor and took else processor
    return [*_dataset_rows(facts), ("Processed by", done)]


def _failed_rows(n: Notification) -> list[tuple[str, str | None]]:
    facts = _facts(n)
    attempts, most = facts.get("attempts"), facts.get("max_attempts")
    tries = f"{attempts} of {most}" if attempts and most else _count(attempts)
    return [
        ("Processor", facts.get("processor")),
        ("Reason", facts.get("reason")),
        ("Attempts", tries),
        ("Type", facts.get("type")),
        ("Source", facts.get("source")),
        ("Target", None if n.get("path") else facts.get("target")),
    ]


def _sync_rows(n: Notification) -> list[tuple[str, str | None]]:
    facts = _facts(n)
    return [
        ("Source", facts.get("source")),
        ("Store", facts.get("url")),
        ("Error", facts.get("error")),
        ("Listed", _count(facts.get("listed"))),
        ("Added", _count(facts.get("added"))),
        ("Changed", _count(facts.get("changed"))),
        ("Deleted", _count(facts.get("deleted"))),
        ("Took", human_duration(facts.get("seconds"))),
    ]


# -- single messages ---------------------------------------------------------------------------


def _where(n: Notification) -> str:
    facts = _facts(n)
    return one_line(n.get("path") or facts.get("target") or facts.get("source") or "?")


def _source(n: Notification) -> str:
    return one_line(_facts(n).get("source") or n.get("path") or "?")


def subject(n: Notification) -> str:
    kind = str(n.get("kind"))
    if kind == "dataset.ready":
        return f"{PREFIX} ready: {_where(n)}"
    if kind == "job.failed":
        processor = _facts(n).get("processor")
        suffix = f" ({one_line(processor)})" if processor else ""
        return f"{PREFIX} failed: {_where(n)}{suffix}"
    if kind == "sync.failed":
        return f"{PREFIX} sync failed: {_source(n)}"
    if kind == "sync.finished":
        return f"{PREFIX} synced: {_source(n)}"
    return f"{PREFIX} {one_line(kind)}: {_where(n)}"


def _no_rows(n: Notification) -> list[tuple[str, str | None]]:
    return []


_HEADLINES = {
    "dataset.ready": "Dataset ready",
    "job.failed": "Processing failed for good",
    "sync.failed": "Sync failed",
    "sync.finished": "Sync finished",
}
_ROWS: dict[str, Callable[[Notification], list[tuple[str, str | None]]]] = {
    "dataset.ready": _ready_rows,
    "job.failed": _failed_rows,
    "sync.failed": _sync_rows,
    "sync.finished": _sync_rows,
}


def _log_lines(n: Notification) -> list[str]:
    log = _facts(n).get("log")
    if isinstance(log, str):
        return log.splitlines()
    return [str(line) for line in log] if isinstance(log, Sequence) else []


def _text(
    headline: str,
    rows: Sequence[tuple[str, str | None]],
    log: Sequence[str],
    link_map: Mapping[str, str],
) -> str:
    lines = [headline, ""]
    lines += [f"{label}: {one_line(value)}" for label, value in rows if value not in (None, "")]
    if log:
        lines += ["", "Last lines of the log:", *(f"  {line}" for line in log)]
    if link_map:
        lines += ["", *(f"{_LINK_LABELS.get(k, k)}: {url}" for k, url in link_map.items())]
    return "\n".join(lines) + "\n"


def _a(url: str, label: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'


def _html(
    headline: str,
    rows: Sequence[tuple[str, str | None]],
    log: Sequence[str],
    link_map: Mapping[str, str],
) -> str:
    parts = [f"<h2>{html.escape(headline)}</h2>", "<table>"]
    for label, value in rows:
        if value not in (None, ""):
            cell = html.escape(one_line(value))
            parts.append(f'<tr><th align="left">{html.escape(label)}</th><td>{cell}</td></tr>')
    parts.append("</table>")
    if log:
        parts.append(f"<pre>{html.escape(chr(10).join(log))}</pre>")
    if link_map:
        items = " · ".join(_a(url, _LINK_LABELS.get(k, k)) for k, url in link_map.items())
        parts.append(f"<p>{items}</p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def payload(n: Notification, public_url: str | None) -> dict[str, Any]:
    """The JSON a webhook receives for one notification."""
    return {
        "id": n.get("id"),
        "kind": n.get("kind"),
        "created_at": _iso(n.get("created_at")),
        "path": n.get("path"),
        "source_id": n.get("source_id"),
        "folder_id": n.get("folder_id"),
        "job_id": n.get("job_id"),
        "facts": dict(_facts(n)),
        "links": links(n, public_url),
    }


def single(n: Notification, public_url: str | None) -> Message:
    """One notification as one message."""
    kind = str(n.get("kind"))
    headline = f"{_HEADLINES.get(kind, one_line(kind))}: {_where(n)}"
    if kind.startswith("sync."):
        headline = f"{_HEADLINES[kind]}: {_source(n)}"
    rows = _ROWS.get(kind, _no_rows)(n)
    log = _log_lines(n)
    link_map = links(n, public_url)
    body = payload(n, public_url)
    title = subject(n)
    body["subject"] = title
    extra = address(_facts(n).get(META_KEY))
    return Message(
        title,
        _text(headline, rows, log, link_map),
        _html(headline, rows, log, link_map),
        body,
        recipients=(extra,) if extra else (),
    )


# -- digests -----------------------------------------------------------------------------------


@dataclass
class _Line:
    """One entry of a digest: its text and its links."""

    text: str
    links: dict[str, str]


def _summary(n: Notification) -> str:
    facts = _facts(n)
    kind = n.get("kind")
    if kind == "dataset.ready":
        bits = [
            facts.get("type"),
            human_duration(facts.get("duration")),
            human_fps(facts.get("fps")),
            human_size(facts.get("size")),
        ]
        details = ", ".join(one_line(b) for b in bits if b)
        return f"{_where(n)} ({details})" if details else _where(n)
    if kind == "job.failed":
        processor = facts.get("processor")
        head = f"{_where(n)} ({one_line(processor)})" if processor else _where(n)
        return f"{head}: {one_line(facts.get('reason') or 'failed')}"
    if kind == "sync.failed":
        return f"sync of {_source(n)}: {one_line(facts.get('error') or 'failed')}"
    if kind == "sync.finished":
        counts = [f"{_count(facts.get(k)) or 0} {k}" for k in ("added", "changed", "deleted")]
        return f"{_source(n)}: {', '.join(counts)}"
    return f"{one_line(kind)}: {_where(n)}"


def _section(
    title: str, ns: Sequence[Notification], public_url: str | None, limit: int | None = None
) -> tuple[str, list[_Line], int]:
    shown = ns if limit is None else ns[:limit]
    lines = [_Line(_summary(n), links(n, public_url)) for n in shown]
    return f"{title} ({len(ns):,})", lines, len(ns) - len(shown)


def _digest_text(intro: str, sections: Sequence[tuple[str, list[_Line], int]]) -> str:
    out = [intro]
    for title, lines, more in sections:
        out += ["", f"{title}:"]
        for line in lines:
            out.append(f"- {line.text}")
            out += [f"  {_LINK_LABELS.get(k, k)}: {url}" for k, url in line.links.items()]
        if more:
            out.append(f"- and {more:,} more")
    return "\n".join(out) + "\n"


def _digest_html(intro: str, sections: Sequence[tuple[str, list[_Line], int]]) -> str:
    parts = [f"<p>{html.escape(intro)}</p>"]
    for title, lines, more in sections:
        parts.append(f"<h3>{html.escape(title)}</h3><ul>")
        for line in lines:
            anchors = " · ".join(_a(url, _LINK_LABELS.get(k, k)) for k, url in line.links.items())
            parts.append(f"<li>{html.escape(line.text)}{' — ' + anchors if anchors else ''}</li>")
        if more:
            parts.append(f"<li>and {more:,} more</li>")
        parts.append("</ul>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def digest(ns: Sequence[Notification], public_url: str | None) -> Message:
    """Many notifications as one message: counts, every failure with its reason and links,
    the first ready datasets (then "and N more"), the finished syncs."""
    by_kind: dict[str, list[Notification]] = {}
    for n in ns:
        by_kind.setdefault(str(n.get("kind")), []).append(n)
    ready = by_kind.pop("dataset.ready", [])
    failed = by_kind.pop("job.failed", []) + by_kind.pop("sync.failed", [])
    synced = by_kind.pop("sync.finished", [])
    other = [n for group in by_kind.values() for n in group]
    title = f"{PREFIX} digest: {len(ready):,} ready, {len(failed):,} failed"
    counts = {
        "ready": len(ready),
        "failed": len(failed),
        "synced": len(synced),
        "other": len(other),
    }
    intro = (
        f"mediamirror: {_plural(len(ready), 'dataset')} ready, "
        f"{_plural(len(failed), 'failure')}, {_plural(len(synced), 'sync')} finished."
    )
    sections = [
        _section("Failed", failed, public_url),
        _section("Ready", ready, public_url, DIGEST_READY_LISTED),
        _section("Synced", synced, public_url, DIGEST_READY_LISTED),
        _section("Other", other, public_url, DIGEST_READY_LISTED),
    ]
    sections = [s for s in sections if s[1]]
    body = {
        "kind": "digest",
        "subject": title,
        "counts": counts,
        "notifications": [payload(n, public_url) for n in ns],
    }
    return Message(title, _digest_text(intro, sections), _digest_html(intro, sections), body)
