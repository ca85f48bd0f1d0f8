"""Paths derived from object keys, kept inside their root.

Keys are stored exactly as the bucket has them, but a key is not a safe path: ``a/../b``,
``./x``, ``a//b`` or ``/x`` would climb out of (or alias another place in) a catalog
folder, an output prefix, a cache or a scratch directory. Every path derived from a key
goes through :func:`safe_relpath` (or :func:`safe_segment` for one name), and every local
file path through :func:`join_under`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mediamirror.errors import StoreError

_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPE_SEGMENT = re.compile(r"%([0-9A-Fa-f]{2})")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # what is written %XX in every segment


def _needs_escape(segment: str, i: int) -> bool:
    c = segment[i]
    if ord(c) < 32 or ord(c) == 127:
        return True
    # A literal "%" stays as it is unless it would read as an escape ("%2E") or is the
    # whole segment (the code of an empty segment): only then is it written "%25".
    following = segment[i + 1 : i + 3]
    return c == "%" and (segment == "%" or (len(following) == 2 and set(following) <= _HEX))


def safe_segment(segment: str) -> str:
    """One path segment (a name without ``/``) made safe; see :func:`safe_relpath`."""
    if segment == "":
        return "%"
    if segment in {".", ".."}:
        return "%2E" * len(segment)
    if "%" not in segment and not _CONTROL.search(segment):
        return segment  # the common case: the name as it is (checked in C)
    if not any(_needs_escape(segment, i) for i in range(len(segment))):
        return segment
    return "".join(
        f"%{ord(c):02X}" if _needs_escape(segment, i) else c for i, c in enumerate(segment)
    )


def safe_relpath(key: str) -> str:
    """A relative path for ``key`` that stays inside whatever root it is joined to.

    The key is split at every ``/`` and each segment is written as follows:

    * an ordinary segment is kept as it is (``a/b/clip.mov`` stays ``a/b/clip.mov``, so
      existing catalogs and outputs keep their names);
    * ``.`` and ``..`` become ``%2E`` and ``%2E%2E``;
    * an empty segment (``a//b``, a leading or trailing ``/``) becomes ``%``;
    * control characters (NUL above all) become ``%XX`` (two upper-case hex digits);
    * a literal ``%`` becomes ``%25`` only where it would otherwise be read as one of these
      codes: when two hex digits follow it, or when it is the whole segment.

    So the result has no empty, ``.`` or ``..`` segment and no control character, and the
    mapping is injective and reversible (:func:`key_of`): two different keys never share a
    path. Paths already made safe are not passed through again.
    """
    return "/".join(safe_segment(s) for s in key.split("/"))


def key_of(path: str) -> str:
    """The key :func:`safe_relpath` made ``path`` from (its inverse)."""

    def segment(text: str) -> str:
        if text == "%":
            return ""
        return _ESCAPE_SEGMENT.sub(lambda m: chr(int(m.group(1), 16)), text)

    return "/".join(segment(s) for s in path.split("/"))


def safe_parent(key: str) -> str:
    """The safe relative path of the folder holding ``key`` ("" for a top-level key).

    ``/x`` (a key under an empty-named folder) gives ``%``, not "", so it never shares a
    folder with ``x``."""
    slash = key.rfind("/")
    return safe_relpath(key[:slash]) if slash >= 0 else ""


def is_safe(rel: str) -> bool:
    """True when ``rel`` is relative and has no empty, ``.`` or ``..`` segment and no
    control character: what every joined path must be."""
    if _CONTROL.search(rel):
        return False
    return all(s not in {"", ".", ".."} for s in rel.split("/"))


def check_relpath(rel: str, root: str) -> str:
    """``rel`` itself, unless it has an empty, ``.`` or ``..`` segment or a NUL: then a
    :class:`StoreError` saying it would not stay inside ``root``."""
    if "\0" in rel or any(s in {"", ".", ".."} for s in rel.split("/")):
        raise StoreError(
            f"path {rel!r} points outside {root} or aliases another path "
            "(it has an empty, '.' or '..' segment, or a NUL)"
        )
    return rel


def join_under(root: Path, rel: str) -> Path:
    """``root / rel``, refusing anything that would not stay inside ``root``.

    ``rel`` may hold no empty, ``.`` or ``..`` segment and no NUL (other control
    characters are legal file names); the joined path is also checked after normalisation,
    so a mistake elsewhere cannot reach outside the root. Symbolic links are the caller's
    business (resolve and compare when they matter)."""
    path = root / check_relpath(rel, str(root))
    base = os.path.normpath(root)
    if os.path.commonpath([base, os.path.normpath(path)]) != base:
        raise StoreError(f"path {rel!r} points outside {root}")
    return path
