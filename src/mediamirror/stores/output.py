"""Output stores: where derived files (transcodes, posters, pyramids, results) are written.

Keys given to an :class:`OutputStore` are relative to its prefix. Every upload appears all
at once (local files are renamed into place; S3 objects appear when complete), so nothing
half-written is ever visible.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mediamirror.errors import ConfigError, ConflictError
from mediamirror.paths import check_relpath
from mediamirror.profiles import Profile, profile_of
from mediamirror.stores import StoreSpec, open_store, parse_spec
from mediamirror.stores.timeouts import StoreTimeouts

if TYPE_CHECKING:
    from mediamirror.config import Settings

#: AWS's own S3 endpoints: with or without a region, dual-stack, FIPS, China.
_AWS_HOST = re.compile(r"s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?")


def _host(host: str) -> str:
    """One spelling per host: lower case; ``localhost`` and every loopback address alike."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return "loopback" if address.is_loopback else address.compressed


def _endpoint(spec: StoreSpec) -> str:
    """The S3 API a spec talks to, spelled one way: AWS's endpoint is the same whether it
    is given or not, the default port is the same as no port, a trailing ``/`` is nothing."""
    if not spec.endpoint_url:
        return "aws"
    parts = urlsplit(spec.endpoint_url.strip())
    host = (parts.hostname or "").lower().rstrip(".")
    if _AWS_HOST.fullmatch(host):
        return "aws"
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return spec.endpoint_url.strip().lower()
    path = re.sub("/+", "/", parts.path).rstrip("/")
    return f"{_host(host)}:{port}{path}"


def _folder(path: str) -> str:
    # "" is the whole bucket: it must contain every prefix, so it may not become "/".
    return path.strip("/") + "/" if path.strip("/") else ""


def _folders(spec: StoreSpec) -> set[str]:
    """Where a store's keys live, as ``a/b/`` folders. A directory is resolved (``..``,
    ``//`` and symbolic links); an S3 prefix is taken both literally (AWS keeps ``a//b``
    and ``a/../b`` as they are) and normalised (MinIO and others clean such paths)."""
    if spec.kind == "local":
        return {_folder(os.path.realpath(spec.prefix))}
    return {_folder(spec.prefix), _folder(posixpath.normpath("/" + spec.prefix))}


def overlaps(a: StoreSpec, b: StoreSpec) -> bool:
    """True when one store holds (part of) the other: same resolved place, and one
    folder inside the other."""
    if a.kind != b.kind:
        return False
    if a.kind != "local" and (_endpoint(a), a.bucket) != (_endpoint(b), b.bucket):
        return False
    return any(x.startswith(y) or y.startswith(x) for x in _folders(a) for y in _folders(b))


def derived_specs(settings: Settings, env: Mapping[str, str]) -> list[StoreSpec]:
    """The stores derived files are written to: the output store, the results store and
    the results stores of command processors."""
    processors = settings.sections.get("processors") or {}
    urls: list[Any] = [settings.output_url, settings.results_store]
    if isinstance(processors, Mapping):
        urls += [c.get("results_store") for c in processors.values() if isinstance(c, Mapping)]
    specs = []
    for url in dict.fromkeys(u for u in urls if isinstance(u, str) and u):
        try:
            specs.append(
                parse_spec(url, endpoint_url=settings.output_endpoint_url or None, env=env)
            )
        except ConfigError:
            continue  # a broken setting fails where it is used, with its own message
    return specs


def check_apart(source: StoreSpec, derived: Iterable[StoreSpec]) -> None:
    """Refuse a source that overlaps a store derived files go to: the next sync would
    mirror those files back as new datasets, and outputs would be written into a source."""
    for spec in derived:
        if overlaps(spec, source):
            raise ConfigError(
                f"output store {spec.url} overlaps the source {source.url}: "
                "sources are read-only, choose another bucket or prefix"
            )


# -- per-source outputs (profiles) -----------------------------------------------------------------


def profile_output_spec(profile: Profile, settings: Settings, env: Mapping[str, str]) -> StoreSpec:
    """Where a source with this profile writes its derived files: the profile's output URL
    (with its endpoint, else the installation's ``output_endpoint_url``), else the
    installation's output store."""
    endpoint = profile.output_endpoint_url or settings.output_endpoint_url or None
    return parse_spec(profile.output_url or settings.output_url, endpoint_url=endpoint, env=env)


def check_profile_outputs(
    name: str,
    spec: StoreSpec,
    profile: Profile,
    others: Iterable[Any],
    *,
    settings: Settings,
    env: Mapping[str, str],
) -> None:
    """Refuse a source (new, or with a changed store or profile) whose outputs would land
    in a source or mix with another source's outputs. One line, naming the other source.

    ``name``, ``spec`` and ``profile``: the source as it would be; ``others``: the
    catalog's sources (rows with ``name``, ``options`` and the store columns, e.g.
    :func:`mediamirror.sources.list_sources`); a row named ``name`` is skipped, so the
    source being edited may be among them. Refused, with :class:`ConfigError`:

    - its output location overlapping any source, its own included;
    - its store overlapping another source's output location (the installation's derived
      stores are :func:`check_apart`'s);
    - a ``mirror`` layout whose output overlaps the installation's output or results
      stores: mirror names are the source's own keys, so they could be any catalog name.

    and with :class:`ConflictError`: its output location overlapping another source's when
    either of the two uses the ``mirror`` layout (two ``catalog`` layouts never share a
    name: pyramids are named after the source, everything else after its mount)."""
    from mediamirror.sources import spec_of  # sources imports this module

    out = profile_output_spec(profile, settings, env)
    rows = [o for o in others if o.name != name]
    for other in [spec, *(spec_of(o) for o in rows)]:
        if overlaps(out, other):
            raise ConfigError(
                f"output store {out.url} overlaps the source {other.url}: "
                "sources are read-only, choose another bucket or prefix"
            )
    if profile.output_layout == "mirror":
        for derived in derived_specs(settings, env):
            if overlaps(out, derived):
                raise ConfigError(
                    f"mirror-layout output {out.url} overlaps the installation's store "
                    f"{derived.url}: give the source an output location of its own (--output)"
                )
    for row in rows:
        theirs = profile_of(row)
        try:
            their_out = profile_output_spec(theirs, settings, env)
        except ConfigError:
            continue  # a profile broken since: it fails where it is used, with its message
        if overlaps(spec, their_out):
            raise ConfigError(
                f"the outputs of source {row.name!r} ({their_out.url}) overlap the source "
                f"{spec.url}: sources are read-only, choose another bucket or prefix"
            )
        mirror = "mirror" in (profile.output_layout, theirs.output_layout)
        if mirror and overlaps(out, their_out):
            raise ConflictError(
                f"output {out.url} ({profile.output_layout} layout) would mix with the "
                f"outputs of source {row.name!r} at {their_out.url} ({theirs.output_layout} "
                "layout): choose another output location"
            )


class OutputStore:
    """A writable store addressed by keys relative to its prefix."""

    def __init__(
        self, spec: StoreSpec, env: Mapping[str, str], timeouts: StoreTimeouts | None = None
    ) -> None:
        self.spec = spec
        self.inner: Any = open_store(spec, env, timeouts=timeouts)
        self.prefix = "" if spec.kind == "local" else spec.prefix
        if spec.kind == "local":
            Path(spec.prefix).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(
        cls,
        url: str,
        env: Mapping[str, str],
        *,
        endpoint_url: str | None = None,
        sources: list[StoreSpec] = (),  # type: ignore[assignment]
        timeouts: StoreTimeouts | None = None,
    ) -> OutputStore:
        spec = parse_spec(url, endpoint_url=endpoint_url or None, env=env)
        for source in sources:
            check_apart(source, [spec])
        return cls(spec, env, timeouts)

    def key(self, rel: str) -> str:
        """The store key of an output path. Output paths are made with
        :func:`mediamirror.paths.safe_relpath`; one with a ``..`` or empty segment (an old
        catalog's folder path, say) is refused rather than written beside its place."""
        clean = rel.lstrip("/")
        body = clean[:-1] if clean.endswith("/") else clean  # a listing prefix ends in /
        if body:
            check_relpath(body, self.spec.url)
        return self.prefix + clean

    def version(self, rel: str) -> str:
        """A token that changes whenever the file at ``rel`` is written again (its etag:
        the content hash on S3, mtime and size locally)."""
        return str(self.inner.head(self.key(rel)).etag)

    def url(self, rel: str) -> str:
        return str(self.inner.object_url(self.key(rel)))

    def put_file(self, rel: str, src: Path, content_type: str | None = None) -> str:
        self.inner.put_file(self.key(rel), src, content_type)
        return rel

    def copy(self, src_rel: str, dst_rel: str) -> None:
        """Server-side copy on S3; a file copy (renamed into place) locally."""
        if self.spec.kind == "local":
            self.inner.put_file(self.key(dst_rel), self.inner.local_path(self.key(src_rel)))
            return
        self.inner.copy(self.key(src_rel), self.key(dst_rel))

    def delete(self, rel: str) -> None:
        self.inner.delete(self.key(rel))

    def read_range(self, rel: str, start: int, length: int, etag: str | None = None) -> bytes:
        return bytes(self.inner.read_range(self.key(rel), start, length, etag))

    def size(self, rel: str) -> int:
        return int(self.inner.head(self.key(rel)).size)

    def download(self, rel: str, dest: Path) -> None:
        self.inner.download(self.key(rel), dest)

    def locate(self, rel: str) -> tuple[str, str]:
        """How to serve a file: ("file", local path) or ("url", presigned URL)."""
        if self.spec.kind == "local":
            return "file", str(self.inner.local_path(self.key(rel)))
        return "url", str(self.inner.presigned_url(self.key(rel)))

    def list(self, rel_prefix: str) -> Iterator[str]:
        """Keys (relative) under a prefix, for replacing result sets."""
        full = self.key(rel_prefix)
        if self.spec.kind == "local":
            root = Path(self.spec.prefix) / full
            if root.is_dir():
                for path in sorted(root.rglob("*")):
                    if path.is_file() and not path.name.endswith(".part"):
                        yield str(path.relative_to(self.spec.prefix))
            return
        for page in self.inner.list_pages_under(full):
            for info in page:
                yield info.key[len(self.prefix) :]
