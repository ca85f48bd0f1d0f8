"""Layout rules: what each key becomes in the catalog (DIVE's S3 import conventions).

* a video becomes its own dataset folder ``Video {filename}`` holding the video item;
* a folder whose files include images becomes an ``image-sequence`` dataset;
* a whole-slide image, or a raster image of at least ``large_image_bytes``, becomes its own
  ``large-image`` dataset folder ``Large image {filename}``. A source's ``images`` mode
  changes that for raster images: ``large-image`` makes every one a large image,
  ``sequence`` none (``auto``, the default, is the rule above; post-processing may also
  turn a frame of too many pixels into a large image, see :data:`BY_PIXELS`);
* ``.json``/``.csv`` sidecars named after a video (``clip.json`` or ``clip.mov.json`` next to
  ``clip.mov``) join that video's dataset;
* everything else is a plain item in the folder of its key.

Folder paths go through :mod:`mediamirror.paths`: a key's ``.``, ``..`` and empty segments
never climb out of the source's mount or alias another folder (``a/../b/f.tif`` is placed
in ``a/%2E%2E/b``), while ordinary keys keep their plain paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mediamirror.paths import safe_parent, safe_relpath, safe_segment

VIDEO_EXTENSIONS = frozenset(
    "3g2 3gp asf avi dv f4v flv m2t m2ts m2v m4v mkv mov mp4 mpe mpeg mpg mts mxf "
    "ogm ogv qt rm rmvb ts vob webm wmv".split()
)
IMAGE_EXTENSIONS = frozenset("bmp gif jpe jpeg jpg jp2 png tif tiff webp".split())
#: Whole-slide and other formats that are always viewed as tiled large images.
LARGE_IMAGE_EXTENSIONS = frozenset("bif czi mrxs ndpi qptiff scn svs svslide vms vmu".split())
SIDECAR_EXTENSIONS = frozenset({"json", "csv"})
#: Extensions some rule looks at: a file with any other is a plain item of its folder.
_RULED = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | LARGE_IMAGE_EXTENSIONS | SIDECAR_EXTENSIONS
#: Folders whose safe paths :meth:`Layout.place` keeps (a listing goes folder by folder).
_DIR_CACHE = 4096

VIDEO_PREFIX = "Video "
LARGE_IMAGE_PREFIX = "Large image "

#: A source's ``images`` modes (see :mod:`mediamirror.profiles`).
AUTO = "auto"
LARGE_IMAGES = "large-image"
SEQUENCE = "sequence"
#: Metadata of a large-image dataset made by post-processing from a frame of an ``auto``
#: source's image sequence (its pixel count): the next syncs keep its item there.
BY_PIXELS = "large_by_pixels"


class Kind(StrEnum):
    VIDEO = "video"
    IMAGE = "image"
    LARGE_IMAGE = "large-image"
    SIDECAR = "sidecar"
    OTHER = "other"


class DatasetType(StrEnum):
    VIDEO = "video"
    IMAGE_SEQUENCE = "image-sequence"
    LARGE_IMAGE = "large-image"


def extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot + 1 :].lower() if dot > 0 else ""


def is_raster(name: str) -> bool:
    """A raster image (``IMAGE_EXTENSIONS``): what a source's ``images`` mode decides on."""
    return extension(name) in IMAGE_EXTENSIONS


def classify(name: str, size: int, large_image_bytes: int, images: str = AUTO) -> Kind:
    """What a key is. ``images`` is the source's images mode: ``auto`` (a raster image of
    at least ``large_image_bytes`` is a large image), ``large-image`` (every raster image
    is) or ``sequence`` (none is; whole-slide formats always are)."""
    ext = extension(name)
    if ext in VIDEO_EXTENSIONS:
        return Kind.VIDEO
    if ext in LARGE_IMAGE_EXTENSIONS:
        return Kind.LARGE_IMAGE
    if ext in IMAGE_EXTENSIONS:
        if images == LARGE_IMAGES:
            return Kind.LARGE_IMAGE
        if images == SEQUENCE:
            return Kind.IMAGE
        return Kind.LARGE_IMAGE if size >= large_image_bytes else Kind.IMAGE
    if ext in SIDECAR_EXTENSIONS:
        return Kind.SIDECAR
    return Kind.OTHER


def split_key(rel: str) -> tuple[str, str]:
    """``a/b/clip.mov`` -> (``a/b``, ``clip.mov``)."""
    slash = rel.rfind("/")
    return (rel[:slash], rel[slash + 1 :]) if slash >= 0 else ("", rel)


def group_prefix(key: str) -> str | None:
    """Keys sharing this prefix may attach to each other (``dir/clip.``); None if no dot."""
    slash = key.rfind("/")
    dot = key.find(".", slash + 1)
    return key[: dot + 1] if dot > slash + 1 else None


def sidecar_stems(name: str) -> tuple[str, ...]:
    """Video names or stems a sidecar may belong to: ``clip.mov.json`` -> (clip.mov,)."""
    dot = name.rfind(".")
    return (name[:dot],) if dot > 0 else ()


def video_stems(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    return (name, name[:dot] if dot > 0 else name)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one key goes: folder path relative to the mount, and the dataset it makes."""

    folder: str  # "" is the mount folder itself; always a safe relative path
    dataset: DatasetType | None = None
    import_path: str = ""
    import_source: str = ""


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def dataset_metadata(placement: Placement) -> dict[str, Any]:
    """DIVE-compatible metadata of a new dataset folder."""
    assert placement.dataset is not None
    return {
        "type": placement.dataset.value,
        "fps": -1,
        "import_path": placement.import_path,
        "import_source": placement.import_source,
        "MarkForPostProcess": True,
    }


class Layout:
    """Places keys of one source; ``prefix`` is the source's key prefix (stripped)."""

    def __init__(
        self, prefix: str, object_url: Any, large_image_bytes: int, images: str = AUTO
    ) -> None:
        self.prefix = prefix
        self.object_url = object_url
        self.large_image_bytes = large_image_bytes
        self.images = images
        self._dirs: dict[str, tuple[str, str, Placement, Placement]] = {}

    def relative(self, key: str) -> str:
        return key[len(self.prefix) :]

    def marker_folder(self, key: str) -> str:
        """The folder a folder marker (``dir/``) stands for, as a safe relative path."""
        return safe_relpath(self.relative(key)[:-1])

    def videos_by_stem(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, str], str]:
        """(dir, stem) -> video name, for sidecar matching within one chunk."""
        found: dict[tuple[str, str], str] = {}
        for key, size in keys:
            d, name = split_key(key)
            if classify(name, size, self.large_image_bytes, self.images) is Kind.VIDEO:
                for stem in video_stems(name):
                    found.setdefault((d, stem), name)
        return found

    def _dir(self, key: str, rel: str) -> tuple[str, str, Placement, Placement]:
        """Of the folder holding ``key``: its key path, its safe relative path, and the
        placements of a frame and of a plain file in it. Cached: the keys of a listing
        come folder by folder, and making a path safe is most of the cost of a key."""
        slash = key.rfind("/")
        key_dir = key[:slash] if slash >= 0 else ""
        hit = self._dirs.get(key_dir)
        if hit is None:
            if len(self._dirs) >= _DIR_CACHE:
                self._dirs.clear()
            rel_dir = safe_parent(rel)
            frame = Placement(
                folder=rel_dir,
                dataset=DatasetType.IMAGE_SEQUENCE,
                import_path=key_dir,
                import_source=self.object_url(key_dir + "/" if key_dir else ""),
            )
            hit = self._dirs[key_dir] = (key_dir, rel_dir, frame, Placement(folder=rel_dir))
        return hit

    def place_listed(
        self, listed: Iterable[tuple[str, int]], videos: dict[tuple[str, str], str]
    ) -> list[Placement]:
        """:meth:`place` of each ``(key, size)``, in listing order (folder by folder). A
        file whose extension no rule looks at (most files of most trees) gets its
        folder's plain placement, found once per folder, without being classified.

        The extension is read from the key: where the prefix cuts into a key's last
        segment, the name :meth:`place` classifies is a suffix of it, whose extension is
        the same or none, so such a key is never taken for plain wrongly."""
        placed: list[Placement] = []
        append, place, ruled = placed.append, self.place, _RULED
        folder: str | None = None
        plain: Placement | None = None
        for key, size in listed:
            slash = key.rfind("/")
            dot = key.rfind(".")
            if dot > slash + 1 and key[dot + 1 :].lower() in ruled:
                append(place(key, size, videos))
                continue
            key_dir = key[:slash] if slash >= 0 else ""
            if key_dir != folder or plain is None:
                folder = key_dir
                plain = self._dir(key, self.relative(key))[3]
            append(plain)
        return placed

    def place(
        self,
        key: str,
        size: int,
        videos: dict[tuple[str, str], str],
        *,
        large: bool = False,
    ) -> Placement:
        """Where ``key`` goes. ``large``: a raster image post-processing found too big for
        a frame (:data:`BY_PIXELS`); an ``auto`` source keeps it a large image."""
        rel = self.relative(key)
        key_dir, rel_dir, frame, plain = self._dir(key, rel)
        name = split_key(rel)[1]
        kind = classify(name, size, self.large_image_bytes, self.images)
        if large and kind is Kind.IMAGE and self.images == AUTO:
            kind = Kind.LARGE_IMAGE
        if kind is Kind.VIDEO or kind is Kind.LARGE_IMAGE:
            is_video = kind is Kind.VIDEO
            return Placement(
                folder=join(
                    rel_dir, safe_segment((VIDEO_PREFIX if is_video else LARGE_IMAGE_PREFIX) + name)
                ),
                dataset=DatasetType.VIDEO if is_video else DatasetType.LARGE_IMAGE,
                import_path=key_dir,
                import_source=self.object_url(key),
            )
        if kind is Kind.IMAGE:
            return frame
        if kind is Kind.SIDECAR:
            for stem in sidecar_stems(name):
                video = videos.get((key_dir, stem))
                if video is not None:
                    return Placement(folder=join(rel_dir, safe_segment(VIDEO_PREFIX + video)))
        return plain
