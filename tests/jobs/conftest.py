"""Fixtures of the job tests: a workspace (``Lab``) around one catalog and the real CLI,
and tiny media generated once per session with the real ffmpeg binary and pyvips.

The moto S3 server, the catalog URL fixture (SQLite, and PostgreSQL when
``MEDIAMIRROR_TEST_DATABASE_URL`` is set; a failure in CI without it) and the CLI runner
come from ``tests/conftest.py`` and ``tests/helpers.py``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import pyvips
from sqlalchemy import select, update

from helpers import Cli, Result, entry_point
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.meta import update_meta
from mediamirror.catalog.models import FOLDERS
from mediamirror.config import Settings, load_settings
from mediamirror.jobs.model import JOBS
from mediamirror.processing.transcode import ffmpeg_exe, has_encoder
from mediamirror.services import Services
from mediamirror.sources import add_source, sync_source

TESTS_DIR = Path(__file__).resolve().parents[1]
QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
#: Fast defaults for every test; a test overrides what it is about.
BASE_ENV = {
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p
    ),
    "MEDIAMIRROR_JOB_RETRY_INTERVALS": "0.1,0.1",
    "MEDIAMIRROR_TRANSCODE_PRESET": "ultrafast",
    "MEDIAMIRROR_WORKERS": "2",
    # The product's default (tests/helpers.py turns it off for the sync tests).
    "MEDIAMIRROR_AUTO_POSTPROCESS": "true",
}


# -- a workspace: catalog + CLI + local media --------------------------------------------------


class Lab:
    """One test's world: a catalog, the CLI on it (a subprocess through the real entry
    point), a local media directory to use as a source, and readers for what the code
    under test wrote (jobs, dataset metadata, output files)."""

    def __init__(self, root: Path, catalog: Catalog, cli: Cli) -> None:
        self.root = root
        self.catalog = catalog
        self.cli = cli
        self.cli.env.update(BASE_ENV)
        self.media = root / "media"
        self.media.mkdir(parents=True, exist_ok=True)
        self.trace_dir = root / "trace"
        self._started = 0
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> Path:
        return self.cli.home

    @property
    def outputs(self) -> Path:
        return self.home / "outputs"

    # configuration

    def configure(self, processors: dict[str, Any] | None = None, **settings: Any) -> None:
        """Write ``<home>/config.yaml``."""
        import yaml

        data: dict[str, Any] = dict(settings)
        if processors:
            data["processors"] = processors
        (self.home / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")

    def environ(self, **extra: str) -> dict[str, str]:
        return self.cli.environ(extra)

    def settings(self, **extra: str) -> Settings:
        """The settings a CLI process would see (config.yaml + environment)."""
        return load_settings(env=self.environ(**extra))

    def services(self, **extra: str) -> Services:
        env = self.environ(**extra)
        return Services(self.catalog, load_settings(env=env), env)

    # media and sources

    def put(self, rel: str, src: Path | bytes) -> Path:
        dest = self.media / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
        return dest

    def add_local_source(self, name: str = "src") -> None:
        add_source(self.catalog, name, f"file://{self.media}", env=self.environ())

    def sync(self, name: str = "src", **extra: str) -> None:
        """An in-process sync (no automatic post-processing: the test queues jobs)."""
        env = self.environ(**extra)
        sync_source(self.catalog, load_settings(env=env), name, env)

    # running the CLI

    def run(self, *args: str, ok: bool | None = True, timeout: float = 120, **env: str) -> Result:
        return self.cli.run(*args, env=env, ok=ok, timeout=timeout)

    def worker(self, *args: str, timeout: float = 120, **env: str) -> Result:
        """``mediamirror worker --burst``: drains the queue and exits."""
        return self.run("worker", "--burst", *args, timeout=timeout, **env)

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """A long-running CLI process in its own process group (so a test can clean up
        whatever it started, children included); its output goes to ``<root>/*.log``."""
        self._started += 1
        log = (self.root / f"process-{self._started}.log").open("w")
        try:
            return subprocess.Popen(
                [*entry_point(), *args],
                env=self.environ(**env),
                cwd=self.home.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        finally:
            log.close()

    # reading the catalog

    def datasets(self) -> dict[str, Any]:
        """Dataset folders by path."""
        with self.catalog.read() as conn:
            rows = conn.execute(select(FOLDERS)).all()
        return {r.path: r for r in rows if (r.meta or {}).get("type")}

    def dataset(self, path: str) -> Any:
        return self.datasets()[path]

    def set_meta(self, path: str, **values: Any) -> None:
        update_meta(self.catalog, self.dataset(path).id, lambda meta: meta.update(values))

    def drop_meta(self, path: str, key: str) -> None:
        update_meta(self.catalog, self.dataset(path).id, lambda meta: meta.pop(key, None))

    def jobs(self, **where: Any) -> list[Any]:
        query = select(JOBS).order_by(JOBS.c.id)
        for column, value in where.items():
            query = query.where(JOBS.c[column] == value)
        with self.catalog.read() as conn:
            return list(conn.execute(query).all())

    def job(self, job_id: int) -> Any:
        with self.catalog.read() as conn:
            return conn.execute(select(JOBS).where(JOBS.c.id == job_id)).one()

    def jobs_of(self, path: str) -> list[Any]:
        return self.jobs(target_type="folder", target_id=self.dataset(path).id)

    def set_job(self, job_id: int, **values: Any) -> None:
        with self.catalog.write() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))

    def wait_job(
        self, job_id: int, until: Callable[[Any], bool], timeout: float = 30, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got {what or 'there'}: {job}")
            time.sleep(0.1)

    def output_files(self) -> list[str]:
        """Every file under the local output store, relative, hidden ones included."""
        if not self.outputs.exists():
            return []
        found = (p.relative_to(self.outputs).as_posix() for p in self.outputs.rglob("*"))
        return sorted(f for f in found if (self.outputs / f).is_file())


@pytest.fixture
def lab(tmp_path: Path, catalog: Catalog, cli: Cli) -> Lab:
    """A workspace on this test's catalog: SQLite, and PostgreSQL when configured."""
    return Lab(tmp_path, catalog, cli)


@pytest.fixture
def sqlite_lab(tmp_path: Path, sqlite_url: str, sqlite_cli: Cli) -> Iterator[Lab]:
    """A workspace on SQLite only, for tests where the catalog backend does not matter."""
    catalog = Catalog(sqlite_url)
    yield Lab(tmp_path, catalog, sqlite_cli)
    catalog.close()


@pytest.fixture
def reaper() -> Iterator[Callable[[subprocess.Popen[str]], subprocess.Popen[str]]]:
    """Registers long-running processes a test starts; kills their process groups (and
    so any ffmpeg they left behind) at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def register(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        started.append(proc)
        return proc

    yield register
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)


# -- tiny media --------------------------------------------------------------------------------


def ffmpeg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ffmpeg_exe(), *QUIET, *args], capture_output=True, text=True)


def lavfi(source: str) -> list[str]:
    return ["-f", "lavfi", "-i", source]


def _make(out: Path, *args: str) -> Path:
    result = ffmpeg(*args, str(out))
    assert result.returncode == 0, result.stderr
    return out


def gradient(width: int, height: int) -> pyvips.Image:
    xy = pyvips.Image.xyz(width, height)
    red = xy[0] * (255 / width)
    green = xy[1] * (255 / height)
    return red.bandjoin([green, (red + green) / 2]).cast("uchar").copy(interpretation="srgb")


class Unavailable(Exception):
    """This machine's ffmpeg cannot make a sample (a documented capability gap)."""


class MediaKit:
    """Tiny sample files, each generated on first use with the real ffmpeg or pyvips and
    kept for the session. The docstring of each maker says what the file is."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        with self._lock:
            if name not in self._made:
                maker = getattr(self, "_" + name.replace("-", "_"))
                self._made[name] = maker(self.root / name)
            return self._made[name]

    def unavailable(self, name: str) -> str | None:
        """Why this ffmpeg cannot make ``name`` (a capability gap), or None."""
        try:
            self[name]
        except Unavailable as exc:
            return str(exc)
        return None

    def _h264_faststart(self, out: Path) -> Path:
        """160x120, 25 fps, 1 s, H.264 yuv420p + AAC, moov first: web-ready."""
        return _make(
            out.with_suffix(".mp4"),
            *lavfi("testsrc2=size=160x120:rate=25:d=1"),
            *lavfi("sine=frequency=440:d=1"),
            *H264,
            *["-c:a", "aac", "-movflags", "+faststart", "-shortest"],
        )

    def _h264_moov_end(self, out: Path) -> Path:
        """160x120, 25 fps, 1 s, H.264 yuv420p, moov after mdat: needs a remux."""
        return _make(out.with_suffix(".mp4"), *lavfi("testsrc2=size=160x120:rate=25:d=1"), *H264)

    def _mpeg4_avi(self, out: Path) -> Path:
        """160x120, 15 fps, 1 s, MPEG-4 part 2 in AVI."""
        return _make(
            out.with_suffix(".avi"),
            *lavfi("testsrc2=size=160x120:rate=15:d=1"),
            *["-c:v", "mpeg4", "-q:v", "5"],
        )

    def _vp9_webm(self, out: Path) -> Path:
        """128x96, 30 fps, 1 s, VP9 (VP8 if this ffmpeg lacks libvpx-vp9) in WebM."""
        encoder = "libvpx-vp9" if has_encoder("libvpx-vp9") else "libvpx"
        return _make(
            out.with_suffix(".webm"),
            *lavfi("testsrc2=size=128x96:rate=30:d=1"),
            *["-c:v", encoder, "-deadline", "realtime", "-cpu-used", "8"],
        )

    def _anamorphic(self, out: Path) -> Path:
        """160x120 H.264 stored with SAR 4:3 (shown 213x120), 25 fps, 1 s."""
        return _make(
            out.with_suffix(".mp4"),
            *lavfi("testsrc2=size=160x120:rate=25:d=1"),
            *["-vf", "setsar=4/3"],
            *H264,
        )

    def _odd_size(self, out: Path) -> Path:
        """321x241 H.264 4:4:4 (4:2:0 cannot be odd-sized), 25 fps, 1 s."""
        return _make(
            out.with_suffix(".mp4"),
            *lavfi("testsrc=size=321x241:rate=25:d=1"),
            *["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"],
        )

    def _rotated(self, out: Path) -> Path:
        """160x120 H.264 with a display matrix turning it 90 degrees."""
        plain = self["h264-moov-end"]
        return _make(
            out.with_suffix(".mp4"), "-display_rotation:v:0", "-90", "-i", str(plain), "-c", "copy"
        )

    def _ten_bit(self, out: Path) -> Path:
        """160x120 H.264 High 10 (yuv420p10le), 25 fps, 1 s (Unavailable when the
        ffmpeg's libx264 cannot encode 10-bit)."""
        dest = out.with_suffix(".mp4")
        result = ffmpeg(
            *lavfi("testsrc2=size=160x120:rate=25:d=1"),
            *["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"],
            str(dest),
        )
        if result.returncode != 0:
            raise Unavailable(f"libx264 of this ffmpeg has no 10-bit support: {result.stderr}")
        return dest

    def _audio_only(self, out: Path) -> Path:
        """1 s of AAC in an MPEG-4 audio (.m4a) file: no video stream."""
        return _make(out.with_suffix(".m4a"), *lavfi("sine=frequency=440:d=1"), "-c:a", "aac")

    def _single_frame(self, out: Path) -> Path:
        """One 160x120 H.264 frame."""
        return _make(
            out.with_suffix(".mp4"),
            *lavfi("testsrc2=size=160x120:rate=25"),
            *["-frames:v", "1"],
            *H264,
        )

    def _vfr(self, out: Path) -> Path:
        """Variable frame rate: 30 fps for 1 s, then every third frame (10 fps)."""
        return _make(
            out.with_suffix(".mp4"),
            *lavfi("testsrc2=size=160x120:rate=30:d=2"),
            *["-vf", "select='lt(n\\,30)+not(mod(n\\,3))'", "-fps_mode", "vfr"],
            *H264,
        )

    def _zero_bytes(self, out: Path) -> Path:
        dest = out.with_suffix(".mp4")
        dest.write_bytes(b"")
        return dest

    def _truncated(self, out: Path) -> Path:
        """The first 4 KiB of a moov-at-end MP4: no index, no usable frames."""
        dest = out.with_suffix(".mp4")
        dest.write_bytes(self["h264-moov-end"].read_bytes()[:4096])
        return dest

    def _text_as_mp4(self, out: Path) -> Path:
        dest = out.with_suffix(".mp4")
        dest.write_text("meeting notes, not a video\n" * 20)
        return dest

    def _slow_source(self, out: Path) -> Path:
        """320x240, 25 fps, 20 s MPEG-4: quick to make, and quick to turn into H.264 with
        the ultrafast preset (~1 s) but not with veryslow (tens of seconds)."""
        return _make(
            out.with_suffix(".avi"),
            *lavfi("testsrc2=size=320x240:rate=25:d=20"),
            *["-c:v", "mpeg4", "-q:v", "10"],
        )

    # images

    def _large_tif(self, out: Path) -> Path:
        """800x700 RGB uncompressed strip TIFF (1.7 MB): a large image above 1 MB."""
        dest = out.with_suffix(".tif")
        gradient(800, 700).tiffsave(str(dest), compression="none")
        return dest

    def _corrupt_tif(self, out: Path) -> Path:
        """A 1.2 MB TIFF whose header is fine and whose pixel data is cut off."""
        dest = out.with_suffix(".tif")
        dest.write_bytes(self["large-tif"].read_bytes()[:1_200_000])
        return dest

    def _frame_png(self, out: Path) -> Path:
        dest = out.with_suffix(".png")
        gradient(64, 48).pngsave(str(dest))
        return dest

    def _frame_tif(self, out: Path) -> Path:
        dest = out.with_suffix(".tif")
        gradient(64, 48).tiffsave(str(dest), compression="none")
        return dest

    def _frame_bmp(self, out: Path) -> Path:
        return _make(
            out.with_suffix(".bmp"), *lavfi("testsrc2=size=64x48:rate=1"), "-frames:v", "1"
        )

    def _corrupt_jpg(self, out: Path) -> Path:
        """A 320x240 JPEG cut in half: the header reads, the pixels do not."""
        dest = out.with_suffix(".jpg")
        full = self.root / "whole.jpg"
        gradient(320, 240).jpegsave(str(full), Q=90)
        data = full.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
        return dest


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaKit:
    return MediaKit(tmp_path_factory.mktemp("media-kit"))


# -- checking outputs --------------------------------------------------------------------------


def top_level_atoms(path: Path) -> list[str]:
    """The top-level box types of an MP4 file, in file order."""
    atoms = []
    with path.open("rb") as fh:
        size_total = path.stat().st_size
        pos = 0
        while pos + 8 <= size_total:
            fh.seek(pos)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - pos
            atoms.append(kind.decode("latin-1"))
            if size < 8:
                break
            pos += size
    return atoms


def assert_web_mp4(path: Path) -> dict[str, Any]:
    """The file is H.264 yuv420p, square pixels, even dimensions, moov before mdat."""
    atoms = top_level_atoms(path)
    assert "moov" in atoms and "mdat" in atoms, atoms
    assert atoms.index("moov") < atoms.index("mdat"), f"not faststart: {atoms}"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        info = {
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "width": ctx.width,
            "height": ctx.height,
            "sar": sar,
            "frames": sum(1 for _ in container.decode(video=0)),
        }
    assert info["codec"] == "h264", info
    assert info["pix_fmt"] == "yuv420p", info
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0, info
    assert sar in (None, 0, 1), info
    assert info["frames"] > 0, info
    return info
