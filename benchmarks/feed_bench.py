"""Feed benchmark: ``mediamirror sync`` of a GraphQL CMS feed against a raw walk of the
same pages with httpx, side by side in one run.

1. The CMS: the tests' GraphQL server (tests/feeds/cms.py: ariadne served by uvicorn) in a
   subprocess of its own on a free localhost port, holding ``--records`` records (videos
   with id, title, updatedAt, file {url size}, owner {email}), ``--page`` per page (the
   issue's query, ``first`` capped by the server), bearer token required.
2. Interleaved, each step after the machine is quiet (``--quiet-wait``): a raw walk (one
   httpx client, every page POSTed with the token, every record's fields read), then per
   ``--rounds`` round a first sync of the feed into a fresh SQLite catalog, a raw walk, a
   re-sync of the unchanged feed, a raw walk. Each sync (the real CLI, spawn to exit) is
   divided by the mean of the two raw walks around it; *sync alone* uses the time the
   engine reports in its summary line (walk and catalog writes, which overlap; no
   start-up or exit; the CLI starts the feed's walk while it is still importing, so part
   of the walk is done before the engine's clock starts). The CLI runs with its bytecode
   compiled once, as an installed package's is (PYTHONDONTWRITEBYTECODE is dropped).
3. The re-sync of the unchanged feed must write nothing: a SHA-256 of every row of
   ``items`` and ``folders`` (``updated_at`` included) before and after, and the summary
   line must say ``0 added, 0 changed, 0 deleted``.

Run from the repository root::

    .venv/bin/python benchmarks/feed_bench.py                  # 10,000 records, 100 a page
    .venv/bin/python benchmarks/feed_bench.py --records 1000   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import (
    MEDIAMIRROR,
    PYTHON,
    REPO,
    loadavg,
    mm_env,
    run_child_rusage,
    run_timed,
    say,
    wait_quiet,
)

TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))
from feeds.cms import QUERY, CmsServer, make_record  # noqa: E402  (the tests' CMS)

SUMMARY = re.compile(r"(\d+) added, (\d+) changed, (\d+) deleted, (\d+) unchanged in ([\d.]+) s")


# -- the CMS, in its own process ---------------------------------------------------------------


def serve_cms(records: int, page: int) -> None:
    """``--serve-cms``: run the tests' CMS with ``records`` records until stdin closes."""
    cms = CmsServer()
    cms.max_first = page
    cms.records = [
        make_record(
            f"rec-{i:06d}",
            f"Clip {i}",
            f"https://media.example.org/videos/{i:06d}.mp4",
            size=1_000_000 + i,
            version=f"2026-11-{1 + i % 28:02d}T10:{i % 60:02d}:00Z",
            owner=f"owner{i % 50}@example.org",
        )
        for i in range(records)
    ]
    with cms.running():
        print(json.dumps({"endpoint": cms.graphql_url, "token": cms.token}), flush=True)
        sys.stdin.read()


@dataclass
class Cms:
    process: subprocess.Popen[str]
    endpoint: str
    token: str

    def cpu(self) -> float:
        """CPU seconds the CMS process used so far (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_cms(records: int, page: int) -> Cms:
    process = subprocess.Popen(
        [PYTHON, __file__, "--serve-cms", str(records), "--page", str(page)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the CMS server did not start")
    info = json.loads(line)
    return Cms(process, info["endpoint"], info["token"])


# -- the two sides ---------------------------------------------------------------------------


def raw_walk(cms: Cms) -> tuple[float, int, int]:
    """Every page with httpx, every record's mapped fields read: (seconds, records, pages)."""
    started = time.perf_counter()
    seen = pages = 0
    after = None
    headers = {"Authorization": f"Bearer {cms.token}"}
    with httpx.Client(headers=headers, timeout=60) as client:
        while True:
            response = client.post(
                cms.endpoint, json={"query": QUERY, "variables": {"after": after}}
            )
            response.raise_for_status()
            videos = response.json()["data"]["videos"]
            pages += 1
            for node in videos["nodes"]:
                _ = (node["id"], node["title"], node["updatedAt"], node["file"]["url"])
                _ = (node["file"]["size"], node["owner"]["email"])
                seen += 1
            if not videos["pageInfo"]["hasNextPage"]:
                break
            after = videos["pageInfo"]["endCursor"]
    return time.perf_counter() - started, seen, pages


def feed_block(cms: Cms) -> dict[str, Any]:
    return {
        "endpoint": cms.endpoint,
        "headers": {"Authorization": "Bearer ${CMS_TOKEN}"},
        "query": QUERY,
        "records": "videos.nodes",
        "next_cursor": "videos.pageInfo.endCursor",
        "has_next": "videos.pageInfo.hasNextPage",
        "id": "id",
        "url": "file.url",
        "name": "title",
        "version": "updatedAt",
        "size": "file.size",
        "metadata": {"owner": "owner.email"},
        "notify": "owner.email",
        "poll_seconds": 0,
    }


@dataclass
class Synced:
    wall: float
    engine: float
    line: str
    counts: tuple[int, int, int, int]
    cms_cpu: float
    cpu: float  # the CLI's own CPU seconds, start-up included

    @property
    def total_cpu(self) -> float:
        return self.cpu + self.cms_cpu


def sync(cms: Cms, env: dict[str, str]) -> Synced:
    before = cms.cpu()
    run = run_child_rusage([MEDIAMIRROR, "sync", "premiere"], env=env)
    cms_cpu = cms.cpu() - before
    match = SUMMARY.search(run.stdout)
    if match is None:
        raise RuntimeError(f"no summary line in: {run.stdout!r}")
    a, c, d, u = (int(match.group(i)) for i in range(1, 5))
    line = run.stdout.strip().splitlines()[-1]
    cpu = run.user_seconds + run.system_seconds
    return Synced(run.seconds, float(match.group(5)), line, (a, c, d, u), cms_cpu, cpu)


def digest(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        h = hashlib.sha256()
        for table in ("items", "folders"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        conn.close()


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment with its bytecode read from ``__pycache__`` as an installed
    package's is (a shell may set PYTHONDONTWRITEBYTECODE: then every command would compile
    mediamirror's modules again, about 0.07 s of CPU)."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_sources() -> None:
    """mediamirror's bytecode written once (``pip install`` does it for a wheel)."""
    src = REPO / "src" / "mediamirror"
    env = cli_env(dict(os.environ))
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(src)], env=env, check=True)


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / ".work" / "feed")
    parser.add_argument("--serve-cms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_cms is not None:
        serve_cms(args.serve_cms, args.page)
        return 0

    started = time.perf_counter()
    command = " ".join(sys.argv[1:])
    say(f"feed benchmark: {args.records:,} records, {args.page} a page, {args.rounds} round(s)")
    cms = start_cms(args.records, args.page)
    compile_sources()
    walks: list[Walk] = []
    firsts: list[tuple[Synced, Walk, Walk]] = []  # (sync, walk before, walk after)
    resyncs: list[tuple[Synced, Walk, Walk]] = []
    unchanged_ok = True
    try:

        def walk(label: str) -> Walk:
            state = wait_quiet(args.quiet_wait)
            before, own = cms.cpu(), time.process_time()
            seconds, seen, pages = raw_walk(cms)
            done = Walk(seconds, cms.cpu() - before + time.process_time() - own)
            walks.append(done)
            say(
                f"  raw walk {label}: {seconds:.2f} s, {done.cpu:.2f} s CPU (with the CMS), "
                f"{seen:,} records in {pages} pages ({state})"
            )
            assert seen == args.records
            return done

        def synced(label: str, env: dict[str, str]) -> Synced:
            state = wait_quiet(args.quiet_wait)
            run = sync(cms, env)
            say(
                f"  {label}: {run.wall:.2f} s wall, {run.engine:.2f} s engine, "
                f"{run.total_cpu:.2f} s CPU (CLI {run.cpu:.2f} + CMS {run.cms_cpu:.2f}) ({state})"
            )
            say(f"    {run.line}")
            return run

        previous = walk("0")
        for r in range(1, args.rounds + 1):
            home = args.work_dir / f"round-{r}"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            config = {"feeds": {"premiere": feed_block(cms)}}
            (home / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            extra = {"CMS_TOKEN": cms.token, "MEDIAMIRROR_AUTO_POSTPROCESS": "false"}
            env = cli_env(mm_env(home, {**extra, "MEDIAMIRROR_LOG_FILE": "off"}))
            add = ["source", "add", "premiere", "feed://premiere", "--mount", "/premiere"]
            run_timed([MEDIAMIRROR, *add], env=env)
            first = synced(f"first sync {r}", env)
            after = walk(f"{r}a")
            firsts.append((first, previous, after))
            before_digest = digest(home / "catalog.db")
            again = synced(f"re-sync {r}", env)
            same = digest(home / "catalog.db") == before_digest
            writes_nothing = same and again.counts[:3] == (0, 0, 0)
            unchanged_ok = unchanged_ok and writes_nothing
            say(f"    unchanged re-walk wrote nothing: {'yes' if writes_nothing else 'NO'}")
            previous = walk(f"{r}b")
            resyncs.append((again, after, previous))
    finally:
        assert cms.process.stdin is not None
        cms.process.stdin.close()
        cms.process.wait(15)

    say("")
    say("| figure | value | target | met? |")
    say("|---|---|---|---|")
    for figure, value, target, met in table(walks, firsts, resyncs, unchanged_ok):
        say(f"| {figure} | {value} | {target} | {met} |")
    say("")
    say(f"command: .venv/bin/python benchmarks/feed_bench.py {command}".rstrip())
    say(f"load average at the end {loadavg()}; whole run {time.perf_counter() - started:.0f} s")
    return 0 if unchanged_ok else 1


@dataclass
class Walk:
    seconds: float
    cpu: float  # the walking process and the CMS


def table(
    walks: list[Walk],
    firsts: list[tuple[Synced, Walk, Walk]],
    resyncs: list[tuple[Synced, Walk, Walk]],
    unchanged_ok: bool,
) -> list[tuple[str, str, str, str]]:
    def ratio(runs: list[tuple[Synced, Walk, Walk]], value: Any, base: Any) -> float:
        return statistics.mean(value(s) / ((base(a) + base(b)) / 2) for s, a, b in runs)

    def figures(label: str, runs: list[tuple[Synced, Walk, Walk]]) -> tuple[str, str, str, str]:
        wall = ratio(runs, lambda s: s.wall, lambda w: w.seconds)
        alone = ratio(runs, lambda s: s.engine, lambda w: w.seconds)
        cpu = ratio(runs, lambda s: s.total_cpu, lambda w: w.cpu)
        rounds = ", ".join(f"{s.wall / ((a.seconds + b.seconds) / 2):.2f}" for s, a, b in runs)
        text = f"{wall:.2f}x (rounds {rounds}; sync alone {alone:.2f}x; CPU time {cpu:.2f}x)"
        return label, text, "<= 1.2x", "yes" if wall <= 1.2 else "NO"

    def mean(runs: list[tuple[Synced, Walk, Walk]], value: Any) -> float:
        return statistics.mean(value(s) for s, _, _ in runs)

    seconds = [w.seconds for w in walks]
    return [
        (
            f"raw httpx walk (mean of {len(walks)})",
            f"{statistics.mean(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
            f"CPU {statistics.mean(w.cpu for w in walks):.2f} s with the CMS",
            "",
            "",
        ),
        figures("first sync / raw walk", firsts),
        figures("re-sync / raw walk", resyncs),
        ("unchanged re-walk writes nothing", "yes" if unchanged_ok else "NO", "yes", ""),
        (
            "first sync: wall / engine / start-up and exit",
            f"{mean(firsts, lambda s: s.wall):.2f} s / {mean(firsts, lambda s: s.engine):.2f} s"
            f" / {mean(firsts, lambda s: s.wall - s.engine):.2f} s",
            "",
            "",
        ),
        (
            "re-sync: wall / engine / start-up and exit",
            f"{mean(resyncs, lambda s: s.wall):.2f} s / {mean(resyncs, lambda s: s.engine):.2f} s"
            f" / {mean(resyncs, lambda s: s.wall - s.engine):.2f} s",
            "",
            "",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
