"""Store faults: a sync, an event and a job facing an S3 endpoint that answers 500/503,
resets connections or stalls either finish through retries or fail with one clear line,
and the catalog never holds a half-written view.

The faults come from a real proxy (tests/faults.py) between mediamirror and moto's S3
server; everything else is the real CLI, the real app and the real worker.
"""

from __future__ import annotations

from typing import Any

from faults import FaultProxy
from helpers import (
    Cli,
    S3Bucket,
    add_source,
    assert_one_error_line,
    catalog_items,
    sync_runs,
)
from jobs.conftest import Lab, MediaKit
from mediamirror.catalog.db import Catalog

#: Quick retries and short timeouts so that every fault costs at most a few seconds.
FAST = {
    "MEDIAMIRROR_SYNC_PAGE_SIZE": "10",
    "MEDIAMIRROR_STORE_MAX_ATTEMPTS": "3",
    "MEDIAMIRROR_STORE_CONNECT_TIMEOUT": "2",
    "MEDIAMIRROR_STORE_READ_TIMEOUT": "1",
}
#: A ListObjectsV2 request, and one for a page after the first.
LISTING = r"list-type=2"
NEXT_PAGE = r"continuation-token="


def _add(cli: Cli, bucket: S3Bucket, proxy: FaultProxy) -> None:
    cli.env.update(FAST)
    cli.run(
        "source", "add", "src", bucket.url(), "--endpoint-url", proxy.endpoint, "--preset", "minio"
    )


def _present(catalog: Catalog) -> list[str]:
    return sorted(k for k, row in catalog_items(catalog).items() if row.state == "present")


def _fill(bucket: S3Bucket, names: list[str]) -> None:
    bucket.put_many([f"docs/{n}.txt" for n in names])


def test_sync_through_intermittent_503s_equals_the_listing(
    cli: Cli, catalog: Catalog, bucket: S3Bucket, proxy: FaultProxy
) -> None:
    _fill(bucket, [f"k{i:02}" for i in range(35)])
    _add(cli, bucket, proxy)
    # Every other listing request is refused: each page needs a retry.
    fault = proxy.fail(503, times=None, every=2, query=LISTING)

    cli.run("sync", "src", "-q")

    assert fault.hits >= 4, "every page should have met a 503"
    assert _present(catalog) == sorted(bucket.keys())
    assert [r.state for r in sync_runs(catalog)] == ["success"]


def test_sync_through_resets_and_a_stall_equals_the_listing(
    cli: Cli, catalog: Catalog, bucket: S3Bucket, proxy: FaultProxy
) -> None:
    _fill(bucket, [f"k{i:02}" for i in range(25)])
    _add(cli, bucket, proxy)
    proxy.reset(times=1, query=NEXT_PAGE)
    proxy.reset(times=1, mid_body=True, query=NEXT_PAGE)
    # Held for longer than the sync may take: only the read timeout gets it going again.
    proxy.stall(seconds=120, times=1, query=LISTING)

    cli.run("sync", "src", "-q", timeout=50)

    assert len(proxy.faulted) == 3
    assert _present(catalog) == sorted(bucket.keys())


def test_persistent_500_fails_the_sync_in_one_line_and_writes_nothing_wrong(
    cli: Cli, catalog: Catalog, bucket: S3Bucket, proxy: FaultProxy
) -> None:
    _fill(bucket, [f"k{i:02}" for i in range(25)])
    _add(cli, bucket, proxy)
    cli.run("sync", "src", "-q")
    before = catalog_items(catalog)
    # Changes the failing sync must not half-apply: new keys late in the listing, one gone.
    _fill(bucket, ["k05b", "z1", "z2"])
    bucket.delete("docs/k01.txt")
    fault = proxy.fail(500, times=None, query=NEXT_PAGE)

    result = cli.run("sync", "src", "-q", ok=False)

    line = assert_one_error_line(result, "cannot list", bucket.url(), "HTTP 500, 3 attempt(s)")
    assert proxy.endpoint not in line  # the request URL is no use to a user
    assert fault.hits == 3, "one listing request, tried store_max_attempts times"
    runs = sync_runs(catalog)
    assert [r.state for r in runs] == ["success", "error"]
    assert runs[-1].error and "\n" not in runs[-1].error
    after = catalog_items(catalog)
    # Keys the failed sync never listed are still present, not taken for deleted.
    assert all(after[k].state == "present" for k in before if k > "docs/k10.txt")
    assert {"docs/z1.txt", "docs/z2.txt"}.isdisjoint(after)

    proxy.clear()
    cli.run("sync", "src", "-q")
    assert _present(catalog) == sorted(bucket.keys())
    assert catalog_items(catalog)["docs/k01.txt"].state == "deleted"
    assert [r.state for r in sync_runs(catalog)] == ["success", "error", "success"]


# -- jobs reading their input through a faulty endpoint ----------------------------------------

#: ffmpeg reads an S3 source through a presigned URL; its requests say who they are.
FFMPEG = ("user-agent", r"^Lavf")
RANGE_READ = ("range", r"^bytes=")


def _video_job(lab: Lab, bucket: S3Bucket, proxy: FaultProxy, media: MediaKit) -> Any:
    """A video needing a remux in an S3 source reached through the proxy; one queued job."""
    lab.cli.env.update(FAST)
    bucket.put("v/clip.mp4", media["h264-moov-end"].read_bytes())
    add_source(lab.catalog, "src", bucket, endpoint_url=proxy.endpoint)
    lab.run("sync", "src", "-q")
    (job,) = lab.jobs(processor="video")
    return job


def test_video_job_through_resets_is_retried_and_succeeds(
    sqlite_lab: Lab, bucket: S3Bucket, proxy: FaultProxy, media: MediaKit
) -> None:
    lab = sqlite_lab
    job = _video_job(lab, bucket, proxy, media)
    # The probe's range read is cut half-way; then ffmpeg's own reads are reset.
    probe_cut = proxy.reset(times=1, mid_body=True, method="GET", header=RANGE_READ)
    ffmpeg_reset = proxy.reset(times=1, header=FFMPEG)

    lab.worker()

    assert probe_cut.hits == 1 and ffmpeg_reset.hits == 1
    done = lab.job(job.id)
    assert done.state == "success", done
    assert done.attempts >= 2, done
    meta = lab.dataset("/src/v/Video clip.mp4").meta
    assert meta["annotate"] is True and meta["processing"]["video"]["state"] == "success"
    assert [f for f in lab.output_files() if f.endswith(".mp4")], lab.output_files()


def test_video_job_against_a_dead_endpoint_ends_with_one_clear_reason(
    sqlite_lab: Lab, bucket: S3Bucket, proxy: FaultProxy, media: MediaKit
) -> None:
    lab = sqlite_lab
    job = _video_job(lab, bucket, proxy, media)
    proxy.reset(times=None, header=FFMPEG)

    lab.worker()

    done = lab.job(job.id)
    assert done.state == "error", done
    # A network failure is retried until the attempts run out, not taken for bad media.
    assert done.attempts == done.max_attempts > 1, done.error
    assert "Connection reset" in done.error, done.error
    assert "\n" not in done.error and "Traceback" not in done.error, done.error
    assert "X-Amz-Signature" not in done.error, done.error
    assert not [f for f in lab.output_files() if f.endswith(".mp4")], lab.output_files()


def test_video_job_reading_a_stalled_endpoint_fails_after_the_read_timeout(
    sqlite_lab: Lab, bucket: S3Bucket, proxy: FaultProxy, media: MediaKit
) -> None:
    """ffmpeg gets ``-rw_timeout`` from ``store_read_timeout``: a store that stops
    answering fails the read (a retry), not the whole job timeout later."""
    lab = sqlite_lab
    job = _video_job(lab, bucket, proxy, media)
    # Every read of ffmpeg's is held without an answer for longer than the job may run.
    stall = proxy.stall(seconds=300, times=None, header=FFMPEG)

    lab.worker(MEDIAMIRROR_JOB_TIMEOUT="90", MEDIAMIRROR_JOB_MAX_ATTEMPTS="1")

    done = lab.job(job.id)
    assert stall.hits >= 1
    assert done.state == "error", done
    assert done.error.startswith("ffmpeg failed"), done.error
    assert "timed out" in done.error.lower(), done.error
    assert "\n" not in done.error and "X-Amz-Signature" not in done.error, done.error

    # The store answers again: the job's next run reads it to the end.
    proxy.clear()
    lab.run("jobs", "retry", str(job.id))
    lab.worker()
    assert lab.job(job.id).state == "success", lab.job(job.id)
    assert [f for f in lab.output_files() if f.endswith(".mp4")], lab.output_files()
