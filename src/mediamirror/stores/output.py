"""Output stores: where derived files (transcodes, posters, pyramids, results) are written.

Keys given to an :class:`OutputStore` are relative to its prefix. Every upload appears all
at once (local files are renamed into place; S3 objects appear when complete), so nothing
half-written is ever visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mediamirror.errors import ConfigError
from mediamirror.stores import StoreSpec, open_store, parse_spec


def _overlaps(a: StoreSpec, b: StoreSpec) -> bool:
    if (a.kind, a.bucket) != (b.kind, b.bucket):
        return False
    if a.kind == "s3" and (a.endpoint_url or "").rstrip("/") != (b.endpoint_url or "").rstrip("/"):
        return False

    def folder(prefix: str) -> str:
        # "" is the whole bucket: it must contain every prefix, so it may not become "/".
        return prefix.strip("/") + "/" if prefix.strip("/") else ""

    pa, pb = folder(a.prefix), folder(b.prefix)
    return pa.startswith(pb) or pb.startswith(pa)


class OutputStore:
    """A writable store addressed by keys relative to its prefix."""

    def __init__(self, spec: StoreSpec, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.inner: Any = open_store(spec, env)
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
    ) -> OutputStore:
        spec = parse_spec(url, endpoint_url=endpoint_url or None, env=env)
        for source in sources:
            if _overlaps(spec, source):
                raise ConfigError(
                    f"output store {spec.url} overlaps the source {source.url}: "
                    "sources are read-only, choose another bucket or prefix"
                )
        return cls(spec, env)

    def key(self, rel: str) -> str:
        return self.prefix + rel.lstrip("/")

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

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        return bytes(self.inner.read_range(self.key(rel), start, length))

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
