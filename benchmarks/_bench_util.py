"""Shared helpers of the post-processing benchmarks (not a benchmark itself).

Every benchmark runs mediamirror the way a user would (the ``mediamirror`` console script of
this virtualenv, a fresh ``MEDIAMIRROR_HOME`` per scenario) next to the same work done
directly, and reports figures as :class:`Row` objects that ``processing_bench.py`` prints
as one table and can write to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MEDIAMIRROR = str(BIN / "mediamirror")
PYTHON = sys.executable


@dataclass
class Row:
    """One figure of the final table: measured value against its target."""

    bench: str
    figure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None  # None: informational, no target

    def shown(self) -> str:
        if self.unit in ("x", "ratio"):
            return f"{self.value:.3f}"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}".rstrip()
        return f"{self.value:.3g} {self.unit}".rstrip()

    def verdict(self) -> str:
        return "" if self.met is None else ("yes" if self.met else "NO")


@dataclass
class BenchResult:
    """What one benchmark measured: table rows, notes for the docs, and the commands."""

    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    seconds: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)

    def row(
        self,
        figure: str,
        value: float,
        unit: str,
        target: str = "",
        met: bool | None = None,
    ) -> Row:
        r = Row(self.name, figure, value, unit, target, met)
        self.rows.append(r)
        return r

    def note(self, text: str) -> None:
        print(f"  {text}", flush=True)
        self.notes.append(text)


def say(text: str) -> None:
    print(text, flush=True)


def mm_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a mediamirror command using ``home`` as its data directory.

    Every ``MEDIAMIRROR_*`` variable of the caller is dropped so the machine's settings
    cannot leak into a benchmark; ``extra`` sets the ones the benchmark wants.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    # Commands run with cached bytecode, as an installed package does (a shell that sets
    # PYTHONDONTWRITEBYTECODE would make every command compile every module again).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["MEDIAMIRROR_HOME"] = str(home)
    env.update(extra or {})
    return env


@dataclass
class Timed:
    seconds: float
    stdout: str
    stderr: str
    returncode: int


def run_timed(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    capture: bool = True,
) -> Timed:
    """Run a command to completion and time it with a monotonic clock (wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
        errors="replace",
        check=False,
    )
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
            f"{(proc.stdout or '')[-2000:]}\n{(proc.stderr or '')[-2000:]}"
        )
    return Timed(elapsed, proc.stdout or "", proc.stderr or "", proc.returncode)


@dataclass
class ChildRun:
    seconds: float
    max_rss_bytes: int
    user_seconds: float
    system_seconds: float
    stdout: str


def run_child_rusage(cmd: Sequence[str], *, env: Mapping[str, str] | None = None) -> ChildRun:
    """Run a command and read *its own* resource usage with ``os.wait4``.

    ``getrusage(RUSAGE_CHILDREN)`` reports the maximum over every child ever waited for;
    ``wait4`` on the one pid gives this child's CPU times (its waited-for descendants
    included). Its ``ru_maxrss`` is only an upper bound: Linux keeps the RSS the forked
    process had (the parent's) at exec time, so peak memory is better read by the child
    itself (``VmHWM`` in ``/proc/self/status``).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        tail = out.strip().splitlines()[-1:] if out.strip() else []
        raise RuntimeError(
            f"command failed (exit {proc.returncode}): {shlex.join(cmd)}"
            + (f": {tail[0][:300]}" if tail else "")
        )
    return ChildRun(elapsed, usage.ru_maxrss * 1024, usage.ru_utime, usage.ru_stime, out)


def ffmpeg_exe() -> str:
    from mediamirror.processing.transcode import ffmpeg_exe as find

    return find()


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import av
    import pyvips

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    ff = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "ffmpeg": (ff.stdout.split("\n", 1)[0].split(" Copyright")[0] if ff.stdout else "?"),
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "pyav": str(av.__version__),
    }


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    for part in first.split():
        if part.startswith("avg10="):
            return float(part.split("=", 1)[1])
    return None


def wait_quiet(max_wait: float, *, pressure: float = 20.0, poll: float = 5.0) -> str:
    """Wait (at most ``max_wait`` s) until the machine is quiet before a timed run.

    Other people's processes on a shared machine skew wall times. Quiet means CPU pressure
    (PSI ``some avg10``) below ``pressure`` percent, or a 1-minute load below 1 where PSI is
    unavailable. Returns a short description of the state the run started in.
    """
    deadline = time.monotonic() + max_wait
    while True:
        psi = cpu_pressure()
        quiet = psi < pressure if psi is not None else os.getloadavg()[0] < 1.0
        if quiet or time.monotonic() >= deadline:
            state = "quiet" if quiet else "BUSY"
            shown = f"cpu pressure {psi:.0f}%" if psi is not None else "no PSI"
            return f"{state}: {shown}, load {loadavg()}"
        time.sleep(poll)


def loadavg() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def mib(n: float) -> float:
    return n / (1024 * 1024)


def dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def rel(path: Path) -> str:
    """A path relative to the repository when it is inside it (for printed commands)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def pg_big_mount(conn: Any, source_id: int, stamp: str) -> tuple[int, int]:
    """The catalog benchmarks' mount folder ``/big`` on a psycopg connection (made if
    missing, with ``stamp`` as its times), and the first free folder id."""
    row = conn.execute("SELECT id FROM folders WHERE path = '/big'").fetchone()
    if row is None:
        row = conn.execute(
            f"INSERT INTO folders (source_id, parent_id, name, path, meta, state, "
            f"created_at, updated_at) VALUES (%s, NULL, 'big', '/big', '{{}}', 'present', "
            f"'{stamp}', '{stamp}') RETURNING id",
            (source_id,),
        ).fetchone()
    assert row is not None
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM folders").fetchone()
    assert first is not None
    return int(row[0]), int(first[0])
