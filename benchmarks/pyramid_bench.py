"""Pyramid: mediamirror's ``make_pyramid`` against the identical libvips ``tiffsave``.

A 20,000 x 20,000 RGB JPEG (Q90; gradients, rings and Gaussian noise made with pyvips) is
turned into a tiled pyramidal TIFF (a) by ``mediamirror.processing.pyramid.make_pyramid`` and
(b) by ``pyvips.Image.new_from_file(src, access="sequential").tiffsave(dest,
**direct_tiffsave_args(image, src))``, each in a fresh Python process that imports the same
modules. Time is measured inside the child around the call (and as the child's wall time);
peak RSS is the child's ``VmHWM`` read from ``/proc/self/status`` as it ends. Runs are
interleaved: direct, mediamirror, direct, mediamirror, ... (``--rounds`` pairs, then a
closing direct run); ratios compare medians.

    .venv/bin/python benchmarks/pyramid_bench.py [--size 20000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _bench_util import PYTHON, BenchResult, ChildRun, mib, run_child_rusage, say, wait_quiet

TARGET_TIME_RATIO = 1.05
TARGET_RSS_RATIO = 1.2

# Both children import the same modules, so interpreter and import memory is equal.
CHILD = """\
import json, sys, time
import pyvips
from mediamirror.processing.pyramid import direct_tiffsave_args, make_pyramid

mode, src, dest = sys.argv[1:4]
start = time.perf_counter()
if mode == "mediamirror":
    info = make_pyramid(src, dest)
    extra = {"levels": info.levels, "compression": info.compression, "bigtiff": info.bigtiff}
else:
    image = pyvips.Image.new_from_file(src, access="sequential")
    args = direct_tiffsave_args(image, src)
    image.tiffsave(dest, **args)
    extra = {"args": args}
seconds = time.perf_counter() - start
# VmHWM: the peak RSS of this process image. (ru_maxrss from wait4 is no good here: Linux
# carries the parent's RSS at fork time over the exec into the child's maximum.)
hwm = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
print(json.dumps({"seconds": seconds, "peak_rss": hwm, **extra}, default=str))
"""


def peak_rss(run: ChildRun, info: dict[str, object]) -> int:
    """The child's VmHWM, or its wait4 maximum where /proc is unavailable."""
    hwm = info.get("peak_rss")
    return hwm if isinstance(hwm, int) and hwm > 0 else run.max_rss_bytes


def make_image(path: Path, size: int) -> None:
    import pyvips

    xyz = pyvips.Image.xyz(size, size)
    x, y = xyz[0], xyz[1]
    red = x * (255.0 / size)
    green = y * (255.0 / size)
    blue = (((x - size / 2) ** 2 + (y - size / 2) ** 2) ** 0.5) % 256
    noise = pyvips.Image.gaussnoise(size, size, sigma=12)
    image = (red.bandjoin([green, blue]) + noise).cast("uchar")
    image.jpegsave(str(path), Q=90)


def run(
    work: Path, *, size: int = 20_000, rounds: int = 4, quiet_wait: float = 240.0
) -> BenchResult:
    result = BenchResult("pyramid")
    started = time.perf_counter()
    say(f"== pyramid: {size} x {size} JPEG")
    folder = work / "pyramid"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    src = folder / "large.jpg"
    t = time.perf_counter()
    make_image(src, size)
    result.note(
        f"source: {size} x {size} RGB JPEG Q90, {src.stat().st_size / 1e6:.0f} MB, made in "
        f"{time.perf_counter() - t:.0f} s"
    )
    child = folder / "pyramid_child.py"
    child.write_text(CHILD)
    result.commands += [
        "pyvips: (xyz gradients + rings + gaussnoise sigma 12).cast('uchar')"
        f".jpegsave('large.jpg', Q=90)  # {size} x {size}",
        "child (a): make_pyramid('large.jpg', 'out.tif')",
        "child (b): image = pyvips.Image.new_from_file('large.jpg', access='sequential'); "
        "image.tiffsave('out.tif', **direct_tiffsave_args(image, 'large.jpg'))",
    ]
    runs: dict[str, list[tuple[ChildRun, dict[str, object]]]] = {"direct": [], "mediamirror": []}
    sizes: dict[str, int] = {}

    def once(mode: str) -> None:
        dest = folder / f"out-{mode}.tif"
        dest.unlink(missing_ok=True)
        state = wait_quiet(quiet_wait)
        run = run_child_rusage([PYTHON, str(child), mode, str(src), str(dest)])
        info = json.loads(run.stdout)
        runs[mode].append((run, info))
        sizes[mode] = dest.stat().st_size
        dest.unlink()
        say(
            f"  {mode} #{len(runs[mode])}: {info['seconds']:.2f} s in call, {run.seconds:.2f} s "
            f"child wall, peak RSS {mib(peak_rss(run, info)):.0f} MiB, "
            f"{run.user_seconds + run.system_seconds:.1f} s CPU ({state})"
        )

    once("direct")
    for _ in range(rounds):
        once("mediamirror")
        once("direct")

    def call_times(mode: str) -> list[float]:
        return [float(str(info["seconds"])) for _, info in runs[mode]]

    def walls(mode: str) -> list[float]:
        return [r.seconds for r, _ in runs[mode]]

    def cpus(mode: str) -> list[float]:
        return [r.user_seconds + r.system_seconds for r, _ in runs[mode]]

    def peak(mode: str) -> int:
        return max(peak_rss(r, info) for r, info in runs[mode])

    med = statistics.median
    # Medians: robust to the other tenants of a shared machine; best-of shown as a check.
    time_ratio = med(call_times("mediamirror")) / med(call_times("direct"))
    best_ratio = min(call_times("mediamirror")) / min(call_times("direct"))
    wall_ratio = med(walls("mediamirror")) / med(walls("direct"))
    cpu_ratio = med(cpus("mediamirror")) / med(cpus("direct"))
    rss_ratio = peak("mediamirror") / peak("direct")
    mm_info = runs["mediamirror"][0][1]
    direct_info = runs["direct"][0][1]
    result.note(f"make_pyramid: {mm_info}; direct tiffsave args: {direct_info.get('args')}")
    result.note(
        f"outputs: {mib(sizes['mediamirror']):.0f} MiB (make_pyramid), "
        f"{mib(sizes['direct']):.0f} MiB (direct)"
    )
    for mode in ("direct", "mediamirror"):
        result.note(
            f"{mode}: in-call "
            + ", ".join(f"{t:.2f}" for t in call_times(mode))
            + " s; CPU "
            + ", ".join(f"{t:.1f}" for t in cpus(mode))
            + " s; peak RSS "
            + ", ".join(f"{mib(peak_rss(r, i)):.0f}" for r, i in runs[mode])
            + " MiB"
        )
    result.row("direct tiffsave, median time in call", med(call_times("direct")), "s")
    result.row("make_pyramid, median time in call", med(call_times("mediamirror")), "s")
    result.row(
        "time ratio make_pyramid / direct (medians)",
        time_ratio,
        "x",
        f"<= {TARGET_TIME_RATIO}",
        time_ratio <= TARGET_TIME_RATIO,
    )
    result.row("time ratio, best run of each", best_ratio, "x")
    result.row("child wall ratio, start-up included (medians)", wall_ratio, "x")
    result.row("CPU ratio user+sys (medians)", cpu_ratio, "x")
    result.row("direct tiffsave, peak RSS", mib(peak("direct")), "MiB")
    result.row("make_pyramid, peak RSS", mib(peak("mediamirror")), "MiB")
    result.row(
        "peak RSS ratio make_pyramid / direct",
        rss_ratio,
        "x",
        f"<= {TARGET_RSS_RATIO}",
        rss_ratio <= TARGET_RSS_RATIO,
    )
    result.raw.update(
        {
            mode: [
                {
                    "call_s": info["seconds"],
                    "wall_s": r.seconds,
                    "peak_rss": peak_rss(r, info),
                    "wait4_max_rss": r.max_rss_bytes,
                    "cpu_s": r.user_seconds + r.system_seconds,
                }
                for r, info in items
            ]
            for mode, items in runs.items()
        }
    )
    shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20_000, help="image width and height")
    parser.add_argument("--rounds", type=int, default=4, help="mediamirror/direct pairs")
    parser.add_argument("--quiet-wait", type=float, default=240.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-pyramid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(work, size=args.size, rounds=args.rounds, quiet_wait=args.quiet_wait)
    for row in result.rows:
        say(f"{row.figure}: {row.shown()} {row.target} {row.verdict()}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
