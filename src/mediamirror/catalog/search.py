"""Catalog search: text over folder names and paths, filters, ranked pages.

The index is the database's own and is kept in step by the database (migration 0009):
SQLite FTS5 trigram over ``folders.path`` fed by triggers, PostgreSQL ``pg_trgm`` GIN on
``lower(folders.path)`` (LIKE). A name is the last part of its path, so a name substring is a
path substring. Terms of one or two characters cannot use trigrams: alone they match the
start of names (an index on ``lower(name)``); beside longer terms they narrow those hits.

Ranking: exact name, then name prefix, then name substring, then a path-only hit; within
a tier the shorter path first, then path and id so pages are stable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    select,
    text,
    true,
)

from mediamirror.catalog.models import FOLDERS, SOURCES
from mediamirror.catalog.tree import dataset_status
from mediamirror.errors import ConfigError
from mediamirror.jobs.model import JOBS

TYPES = ("video", "image-sequence", "large-image")
#: ``type``: a dataset type, ``dataset`` (any of them) or ``folder`` (a plain folder).
TYPE_FILTERS = (*TYPES, "dataset", "folder")
#: ``status``: a dataset's status as the browse API shows it, or a folder's state.
STATUSES = ("ready", "pending", "error", "new", "present", "empty")
#: ``processor_state``: what the dataset page shows per processor (recorded results in the
#: metadata; queued, running and canceled jobs in the job table).
PROCESSOR_STATES = ("success", "error", "queued", "running", "canceled")
MAX_QUERY = 200
MAX_META = 10
MAX_LIMIT = 500
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}(\.[A-Za-z0-9_-]{1,100}){0,4}$")


@dataclass(frozen=True)
class Filters:
    """What narrows a search, checked: a bad value raises :class:`ConfigError` (400)."""

    type: str | None = None
    status: str | None = None
    source: str | None = None
    processor: str | None = None
    processor_state: str | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        type: str | None = None,
        status: str | None = None,
        source: str | None = None,
        processor_state: str | None = None,
        meta: Mapping[str, str] | Iterable[str] | None = None,
    ) -> Filters:
        type, status, source, processor_state = (
            (v.strip() or None) if isinstance(v, str) else None
            for v in (type, status, source, processor_state)
        )
        if type is not None and type not in TYPE_FILTERS:
            raise ConfigError(f"bad type {type!r}: expected one of {', '.join(TYPE_FILTERS)}")
        if status is not None and status not in STATUSES:
            raise ConfigError(f"bad status {status!r}: expected one of {', '.join(STATUSES)}")
        processor, state = _processor_state(processor_state)
        return cls(type, status, source, processor, state, parse_meta(meta))


def _processor_state(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    processor, _, state = value.rpartition(":")
    if state not in PROCESSOR_STATES or (processor and not _NAME.match(processor)):
        raise ConfigError(
            f"bad processor_state {value!r}: expected STATE or PROCESSOR:STATE, STATE one of "
            + ", ".join(PROCESSOR_STATES)
        )
    return processor or None, state


def parse_meta(meta: Mapping[str, str] | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``key:value`` strings (or a mapping) as pairs; a dotted key reaches into objects."""
    if meta is None:
        return ()
    pairs: list[tuple[str, str]] = []
    if isinstance(meta, Mapping):
        pairs = [(str(k), str(v)) for k, v in meta.items()]
    else:
        for entry in meta:
            key, sep, value = entry.partition(":")
            if not sep:
                raise ConfigError(f"bad meta filter {entry!r}: expected key:value")
            pairs.append((key.strip(), value))
    if len(pairs) > MAX_META:
        raise ConfigError(f"too many meta filters: at most {MAX_META}")
    for key, _ in pairs:
        if not _META_KEY.match(key):
            raise ConfigError(f"bad meta key {key!r}: letters, digits, _ and - (a.b for nesting)")
    return tuple(pairs)


@dataclass
class Hit:
    """One folder or dataset found."""

    id: int
    name: str
    path: str
    meta: dict[str, Any]
    state: str
    source: str | None
    updated_at: Any

    @property
    def kind(self) -> str:
        return "dataset" if self.meta.get("type") else "folder"

    @property
    def link(self) -> str:
        return f"/ui/datasets/{self.id}" if self.kind == "dataset" else f"/ui/browse/{self.id}"

    def as_dict(self, thumbnail: Callable[[int, dict[str, Any]], str | None]) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "type": self.meta.get("type"),
            "status": dataset_status(self.meta),
            "state": self.state,
            "source": self.source,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "thumbnail": thumbnail(self.id, self.meta) if self.kind == "dataset" else None,
            "link": self.link,
        }


@dataclass
class Page:
    """A page of hits, shaped like the folder listings (total, offset, limit)."""

    query: str
    total: int
    offset: int
    limit: int
    hits: list[Hit] = field(default_factory=list)

    def as_dict(
        self, thumbnail: Callable[[int, dict[str, Any]], str | None] = lambda _i, _m: None
    ) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "results": [hit.as_dict(thumbnail) for hit in self.hits],
        }


def search(
    catalog: Any,
    q: str,
    *,
    type: str | None = None,
    status: str | None = None,
    source: str | None = None,
    processor_state: str | None = None,
    meta: Mapping[str, str] | Iterable[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Folders and datasets whose path contains every term of ``q`` (an empty ``q``: every
    folder the filters keep), ranked, one page. Bad input raises :class:`ConfigError`."""
    q = " ".join((q or "").split())
    if len(q) > MAX_QUERY:
        raise ConfigError(f"search text too long: at most {MAX_QUERY} characters")
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"bad limit {limit}: expected 1 to {MAX_LIMIT}")
    if offset < 0:
        raise ConfigError(f"bad offset {offset}: expected 0 or more")
    filters = Filters.parse(
        type=type, status=status, source=source, processor_state=processor_state, meta=meta
    )
    with catalog.read() as conn:
        return run(conn, q, filters, limit, offset)


def run(conn: Connection, q: str, filters: Filters, limit: int, offset: int) -> Page:
    """:func:`search` on an open connection."""
    sqlite = conn.dialect.name == "sqlite"
    conds = [_text_condition(q, sqlite), *_filter_conditions(conn, filters, sqlite)]
    where = and_(*conds)
    source_join = FOLDERS.outerjoin(SOURCES, SOURCES.c.id == FOLDERS.c.source_id)
    # The page's ids first, sorted on narrow rows (a sort that carried every hit's
    # metadata would copy all of it), each with the count of all hits: one pass over the
    # hits instead of a count and a page.
    order = [*_ranking(q, sqlite), FOLDERS.c.path, FOLDERS.c.id]
    page = conn.execute(
        select(FOLDERS.c.id, func.count().over().label("total"))
        .where(where)
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    ).all()
    ids = [r.id for r in page]
    if page:
        total = int(page[0].total)
    elif offset:  # past the last hit: how many there are still tells the pager
        total = conn.execute(select(func.count()).select_from(FOLDERS).where(where)).scalar_one()
    else:
        total = 0
    columns = (
        FOLDERS.c.id,
        FOLDERS.c.name,
        FOLDERS.c.path,
        FOLDERS.c.meta,
        FOLDERS.c.state,
        FOLDERS.c.updated_at,
        SOURCES.c.name.label("source"),
    )
    query = select(*columns).select_from(source_join).where(FOLDERS.c.id.in_(ids))
    rows = {r.id: r for r in conn.execute(query)} if ids else {}
    hits = [
        Hit(r.id, r.name, r.path, dict(r.meta or {}), r.state, r.source, r.updated_at)
        for r in (rows[i] for i in ids if i in rows)
    ]
    return Page(q, int(total), offset, limit, hits)


# -- text ----------------------------------------------------------------------------------


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(term: str) -> ColumnElement[bool]:
    """The path contains ``term``, in any case (on PostgreSQL the trigram index is on
    ``lower(path)``, so that is what is matched)."""
    pattern = f"%{_like_escape(term.lower())}%"
    return func.lower(FOLDERS.c.path).like(pattern, escape="\\")


def _name_prefix(term: str, sqlite: bool) -> ColumnElement[bool]:
    """The name starts with ``term``: a range (SQLite) or a LIKE prefix (PostgreSQL,
    ``text_pattern_ops``) on the ``lower(name)`` index."""
    low = term.lower()
    lowered = func.lower(FOLDERS.c.name)
    if sqlite:
        high = low[:-1] + chr(ord(low[-1]) + 1)
        return and_(lowered >= low, lowered < high)
    return lowered.like(f"{_like_escape(low)}%", escape="\\")


def _text_condition(q: str, sqlite: bool) -> ColumnElement[bool]:
    terms = q.split()
    if not terms:
        return true()
    long = [t for t in terms if len(t) >= 3]
    short = [t for t in terms if len(t) < 3]
    if not long:
        # Trigrams need three characters: a short query matches the start of names.
        return and_(_name_prefix(short[0], sqlite), *(_contains(t) for t in short[1:]))
    if sqlite:
        phrase = " AND ".join('"' + t.replace('"', '""') + '"' for t in long)
        matched = FOLDERS.c.id.in_(
            text("SELECT rowid FROM folders_search WHERE folders_search MATCH :fts").bindparams(
                fts=phrase
            )
        )
        return and_(matched, *(_contains(t) for t in short))
    return and_(*(_contains(t) for t in terms))


def _ranking(q: str, sqlite: bool) -> list[ColumnElement[Any]]:
    if not q:
        return []
    low = q.lower()
    # One lower() and one search per row: at 1 (a prefix) the name is exact when it is
    # no longer than the text.
    name = func.lower(FOLDERS.c.name)
    position = func.instr(name, low) if sqlite else func.strpos(name, low)
    tier = case(
        (position == 0, 3),
        (position > 1, 2),
        (func.length(FOLDERS.c.name) == len(low), 0),
        else_=1,
    )
    return [tier, func.length(FOLDERS.c.path)]


# -- filters -------------------------------------------------------------------------------


def _meta_text(keys: tuple[str, ...], sqlite: bool) -> ColumnElement[Any]:
    """The metadata value at ``keys`` as text (``true``/``false`` for booleans; NULL when
    absent), the same on both backends."""
    meta = FOLDERS.c.meta
    if not sqlite:
        return func.json_extract_path_text(meta, *(literal(k, String) for k in keys))
    path = "$" + "".join(f'."{k}"' for k in keys)
    return case(
        (func.json_type(meta, path) == "true", "true"),
        (func.json_type(meta, path) == "false", "false"),
        else_=cast(func.json_extract(meta, path), String),
    )


def _guarded(needle: str, exact: ColumnElement[bool], sqlite: bool) -> ColumnElement[bool]:
    """``exact`` evaluated only where the metadata's JSON text contains ``needle``, a
    condition every match meets (the same answer, negated too): finding a substring is far
    cheaper than parsing the JSON of every folder, and most folders fail it."""
    raw = cast(FOLDERS.c.meta, Text)
    found = (func.instr(raw, needle) if sqlite else func.strpos(raw, needle)) > 0
    return case((found, exact), else_=false())


def _plain(value: str) -> bool:
    """Whether ``value`` is written as itself in JSON text (so it can be a needle)."""
    return bool(value) and value.isascii() and value.isprintable() and not set(value) & {'"', "\\"}


def _is_dataset(sqlite: bool) -> ColumnElement[bool]:
    return _guarded('"type"', _meta_text(("type",), sqlite).isnot(None), sqlite)


def _processing(state: str, processor: str | None, sqlite: bool) -> ColumnElement[bool]:
    """A processor's recorded result (``processing.<name>.state``) is ``state``."""
    return _guarded(f'"{state}"', _processing_exact(state, processor, sqlite), sqlite)


def _processing_exact(state: str, processor: str | None, sqlite: bool) -> ColumnElement[bool]:
    if processor is not None:
        return _meta_text(("processing", processor, "state"), sqlite) == state
    if sqlite:
        # json_extract gives an object back minified, in one spelling: a quote inside a
        # string is escaped, so this finds a "state" member, never text in a message.
        minified = func.json_extract(FOLDERS.c.meta, "$.processing")
        return func.instr(minified, f'"state":"{state}"') > 0
    processing = FOLDERS.c.meta.op("->")(literal("processing", String))
    only_object = case((func.json_typeof(processing) == "object", processing))
    entries = func.json_each(only_object).table_valued("value").alias("p")
    value_state = entries.c.value.op("->>")(literal("state", String))
    return exists(select(literal(1)).select_from(entries).where(value_state == state))


def _has_job(state: str, processor: str | None) -> ColumnElement[bool]:
    conds = [
        JOBS.c.target_type == "folder",
        JOBS.c.target_id == FOLDERS.c.id,
        JOBS.c.state == state,
    ]
    if processor is not None:
        conds.append(JOBS.c.processor == processor)
    return exists().where(*conds)


def _status(status: str, sqlite: bool) -> ColumnElement[bool]:
    """``tree.dataset_status`` as SQL: error > pending > ready > new."""
    if status in ("present", "empty"):
        return FOLDERS.c.state == status
    dataset = _is_dataset(sqlite)
    error = _processing("error", None, sqlite)
    # The cheapest, most selective test first: most folders fail it.
    if status == "error":
        return and_(error, dataset)
    mark = func.coalesce(_meta_text(("MarkForPostProcess",), sqlite), "") == "true"
    pending = _guarded('"MarkForPostProcess"', mark, sqlite)
    if status == "pending":
        return and_(pending, not_(error), dataset)
    annotate = func.coalesce(_meta_text(("annotate",), sqlite), "") == "true"
    ready = _guarded('"annotate"', annotate, sqlite)
    if status == "ready":
        return and_(ready, not_(error), not_(pending), dataset)
    return and_(dataset, not_(error), not_(pending), not_(ready))


def _filter_conditions(conn: Connection, f: Filters, sqlite: bool) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.type == "folder":
        conds.append(not_(_is_dataset(sqlite)))
    elif f.type == "dataset":
        conds.append(_is_dataset(sqlite))
    elif f.type is not None:
        exact = _meta_text(("type",), sqlite) == f.type
        conds.append(_guarded(f'"{f.type}"', exact, sqlite))
    if f.status is not None:
        conds.append(_status(f.status, sqlite))
    if f.source is not None:
        source_id = conn.execute(select(SOURCES.c.id).where(SOURCES.c.name == f.source)).scalar()
        if source_id is None:
            raise ConfigError(f"bad source {f.source!r}: no source of that name")
        conds.append(FOLDERS.c.source_id == source_id)
    if f.processor_state in ("success", "error"):
        # Only datasets have processing results.
        conds.append(_processing(f.processor_state, f.processor, sqlite))
    elif f.processor_state is not None:
        conds.append(_has_job(f.processor_state, f.processor))
    for key, value in f.meta:
        exact = _meta_text(tuple(key.split(".")), sqlite) == value
        conds.append(_guarded(value, exact, sqlite) if _plain(value) else exact)
    return conds or [true()]


__all__ = ["Filters", "Hit", "Page", "parse_meta", "run", "search"]
