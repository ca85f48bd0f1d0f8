"""The notification outbox and its sender, through the real CLI and worker.

Jobs run test processors of :mod:`jobs.fixtures` (a ``video`` entry in config.yaml takes
the built-in processor's place, so no media is transcoded); messages go to a real SMTP
server (aiosmtpd) or webhook receiver on 127.0.0.1 (``tests/notify/conftest.py``). The
sender is either the one the worker runs in its thread or a :class:`Sender` called here
with a ``now`` moved forward, so no test waits for a backoff or a digest window.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from jobs.conftest import Lab
from jobs.fixtures import python_processor
from mediamirror.catalog.models import utcnow
from mediamirror.jobs import queue
from mediamirror.jobs.model import RetryPolicy
from mediamirror.notify.model import DELIVERIES, DELIVERY_ATTEMPTS, NOTIFICATIONS
from mediamirror.notify.sender import Sender, SendSummary

from .conftest import SmtpServer, WebhookReceiver, wait_until

pytestmark = pytest.mark.timeout(180)


# -- helpers -----------------------------------------------------------------------------------


def setup(lab: Lab, count: int, *, processors: dict[str, Any], **blocks: Any) -> list[str]:
    """``count`` video datasets synced into the catalog, config.yaml with ``processors``
    (and ``email``/``notify`` blocks), and their jobs queued by ``postprocess``."""
    lab.configure(processors=processors, **blocks)
    for n in range(count):
        lab.put(f"v/clip{n:04d}.mp4", b"x" * (n + 1))
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r")
    return [f"/src/v/Video clip{n:04d}.mp4" for n in range(count)]


def noop(**conf: Any) -> dict[str, Any]:
    return python_processor("Noop", auto=True, applies_to=["video"], **conf)


def webhook(receiver: WebhookReceiver, **notify: Any) -> dict[str, Any]:
    return {"notify": {"webhooks": [{"url": receiver.url}], **notify}}


def notifications(lab: Lab, kind: str | None = None) -> list[Any]:
    query = select(NOTIFICATIONS).order_by(NOTIFICATIONS.c.id)
    if kind is not None:
        query = query.where(NOTIFICATIONS.c.kind == kind)
    with lab.catalog.read() as conn:
        return list(conn.execute(query).all())


def deliveries(lab: Lab) -> list[Any]:
    with lab.catalog.read() as conn:
        return list(conn.execute(select(DELIVERIES).order_by(DELIVERIES.c.id)).all())


def attempts(lab: Lab, delivery_id: int) -> list[Any]:
    with lab.catalog.read() as conn:
        return list(
            conn.execute(
                select(DELIVERY_ATTEMPTS)
                .where(DELIVERY_ATTEMPTS.c.delivery_id == delivery_id)
                .order_by(DELIVERY_ATTEMPTS.c.id)
            ).all()
        )


def flush(lab: Lab, passes: int = 10) -> list[SendSummary]:
    """Sender passes with the clock moved further each time (past every quiet period,
    digest window and backoff), until nothing waits."""
    sender = Sender(lab.services())
    summaries = []
    try:
        for n in range(1, passes + 1):
            summaries.append(sender.run_once(now=utcnow() + timedelta(hours=2 * n)))
            if summaries[-1].pending == 0:
                return summaries
    finally:
        sender.release()
    raise AssertionError(f"the outbox never drained: {summaries}")


def kinds(receiver: WebhookReceiver) -> list[str]:
    return [str(r.json().get("kind")) for r in receiver.posts]


# -- what is recorded --------------------------------------------------------------------------


@pytest.mark.postgres
def test_job_failing_then_succeeding_sends_no_failure(
    lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    flaky = python_processor(
        "FlakyThenOk", auto=True, applies_to=["video"], trace_dir=str(lab.trace_dir), failures=2
    )
    [path] = setup(lab, 1, processors={"video": flaky}, **webhook(webhook_receiver))
    out = lab.worker()
    assert out.stdout.strip() == "worker ran 3 job(s): 2 queued, 1 success"
    assert notifications(lab, "job.failed") == []
    [ready] = notifications(lab, "dataset.ready")
    assert ready.path == path
    flush(lab)
    assert kinds(webhook_receiver) == ["dataset.ready"]


@pytest.mark.postgres
def test_final_failure_writes_exactly_one_job_failed(
    lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    hiccup = python_processor(
        "AlwaysTransient", auto=True, applies_to=["video"], trace_dir=str(lab.trace_dir)
    )
    [path] = setup(lab, 1, processors={"video": hiccup}, **webhook(webhook_receiver))
    lab.worker()
    [job] = lab.jobs()
    assert (job.state, job.attempts) == ("error", 3)
    assert notifications(lab, "dataset.ready") == []
    [failed] = notifications(lab, "job.failed")
    assert (failed.path, failed.job_id) == (path, job.id)
    facts = failed.facts
    assert facts["processor"] == "video"
    assert facts["reason"] == "storage hiccup (gave up after 3 attempts)"
    assert facts["type"] == "video" and facts["source"] == "src"
    flush(lab)
    [post] = webhook_receiver.posts
    assert post.json()["kind"] == "job.failed"


@pytest.mark.postgres
def test_dataset_ready_once_all_its_processors_succeeded(lab: Lab) -> None:
    [path] = setup(lab, 1, processors={"video": noop(), "check": noop()})
    assert len(lab.jobs()) == 2
    lab.worker()
    assert {j.state for j in lab.jobs()} == {"success"}
    [ready] = notifications(lab, "dataset.ready")
    assert (ready.path, ready.folder_id) == (path, lab.dataset(path).id)
    assert ready.facts["type"] == "video" and ready.facts["size"] == 1
    assert ready.facts["processors"] == ["check", "video"]
    # A reprocess that succeeds again is news again; running nothing is not.
    lab.run("reprocess", "/src", "--processor", "check")
    lab.worker()
    lab.worker()
    assert len(notifications(lab, "dataset.ready")) == 2


@pytest.mark.postgres
def test_sync_error_writes_sync_failed(lab: Lab, webhook_receiver: WebhookReceiver) -> None:
    lab.configure(**webhook(webhook_receiver))
    lab.put("v/clip.mp4", b"x")
    lab.add_local_source()
    lab.run("sync", "src")
    [finished] = notifications(lab, "sync.finished")
    assert finished.facts["added"] == 1
    (lab.media / "v" / "clip.mp4").unlink()
    (lab.media / "v").rmdir()
    lab.media.rmdir()
    lab.run("sync", "src", ok=False)
    [failed] = notifications(lab, "sync.failed")
    assert failed.facts["source"] == "src" and failed.facts["error"]
    flush(lab)
    # sync.finished is recorded, but not sent unless notify.on asks for it.
    assert kinds(webhook_receiver) == ["sync.failed"]


def test_lost_worker_at_last_attempt_writes_job_failed_and_cancel_does_not(
    sqlite_lab: Lab,
) -> None:
    lab = sqlite_lab
    setup(lab, 2, processors={"video": noop()})
    lost, canceled = lab.jobs()
    assert queue.cancel(lab.catalog, canceled.id) == "canceled"
    assert [j.id for j in queue.claim(lab.catalog, "host:1:gone", 1, 30)] == [lost.id]
    # Its last attempt, and its lease ran out: the reaper ends it for good.
    lab.set_job(lost.id, attempts=3, lease_expires_at=utcnow() - timedelta(minutes=1))
    assert queue.reap(lab.catalog, RetryPolicy()) == 1
    assert queue.reap(lab.catalog, RetryPolicy()) == 0
    [failed] = notifications(lab, "job.failed")
    assert failed.job_id == lost.id
    assert failed.facts["reason"] == "worker host:1:gone was lost (gave up after 3 attempts)"


# -- delivery ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_killed_between_change_and_delivery_delivers_once_after_restart(
    lab: Lab,
    smtp_server: SmtpServer,
    started: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    [path] = setup(lab, 1, processors={"video": noop()}, email=smtp_server.email_block())
    # The worker's sender waits for a quiet minute before it sends: the kill lands in it.
    worker = started(lab.popen("worker", MEDIAMIRROR_NOTIFY_QUIET_SECONDS="60"))
    wait_until(lambda: notifications(lab, "dataset.ready"), what="the ready notification")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert smtp_server.messages == [] and deliveries(lab) == []
    restarted = started(lab.popen("worker", MEDIAMIRROR_NOTIFY_QUIET_SECONDS="0"))
    [received] = smtp_server.wait_for(1)
    assert received.subject == f"[mediamirror] ready: {path}"
    wait_until(lambda: [d.state for d in deliveries(lab)] == ["sent"], what="sent recorded")
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(30) == 0
    flush(lab)
    assert len(smtp_server.messages) == 1
    [delivery] = deliveries(lab)
    assert (delivery.channel, delivery.attempts) == ("email", 1)
    assert [a.ok for a in attempts(lab, delivery.id)] == [True]


def test_storm_of_ready_datasets_sends_a_digest(
    sqlite_lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    lab = sqlite_lab
    setup(lab, 500, processors={"video": noop()}, **webhook(webhook_receiver))
    out = lab.worker("--concurrency", "4", timeout=170)
    assert out.stdout.strip() == "worker ran 500 job(s): 500 success"
    assert len(notifications(lab, "dataset.ready")) == 500
    flush(lab)
    posts = webhook_receiver.posts
    assert 1 <= len(posts) <= 3, kinds(webhook_receiver)
    covered = [d for d in deliveries(lab) if d.state == "sent"]
    assert sorted(i for d in covered for i in d.digest_of or [d.notification_id]) == [
        n.id for n in notifications(lab, "dataset.ready")
    ]


def test_smtp_refusing_for_a_while_is_retried_and_arrives_once(
    sqlite_lab: Lab, smtp_down: SmtpServer
) -> None:
    lab = sqlite_lab
    setup(lab, 1, processors={"video": noop()}, email=smtp_down.email_block())
    lab.worker(MEDIAMIRROR_NOTIFY_QUIET_SECONDS="3600")  # its sender leaves it waiting
    sender = Sender(lab.services())
    start = utcnow() + timedelta(hours=2)
    first = sender.run_once(now=start)
    assert (first.sent, first.failed, first.pending) == (0, 0, 1)
    [delivery] = deliveries(lab)
    assert delivery.state == "pending" and delivery.attempts == 1 and delivery.last_error
    # Not due again before its backoff.
    assert sender.run_once(now=start + timedelta(seconds=5)).pending == 1
    assert len(attempts(lab, delivery.id)) == 1
    second = sender.run_once(now=start + timedelta(minutes=1))
    assert (second.sent, second.pending) == (0, 1)
    smtp_down.start()
    third = sender.run_once(now=start + timedelta(minutes=10))
    assert (third.sent, third.failed, third.pending) == (1, 0, 0)
    assert sender.run_once(now=start + timedelta(hours=5)) == SendSummary(0, 0, 0)
    sender.release()
    assert len(smtp_down.wait_for(1)) == 1
    [delivery] = deliveries(lab)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("sent", 3, None)
    tried = attempts(lab, delivery.id)
    assert [a.ok for a in tried] == [False, False, True]
    assert all(a.error for a in tried[:2]) and tried[2].error is None


def test_channel_failing_for_good_is_marked_failed(
    sqlite_lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    lab = sqlite_lab
    webhook_receiver.status = 500
    setup(lab, 1, processors={"video": noop()}, **webhook(webhook_receiver))
    lab.worker(MEDIAMIRROR_NOTIFY_QUIET_SECONDS="3600")
    summaries = flush(lab)
    assert sum(s.failed for s in summaries) == 1
    [delivery] = deliveries(lab)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 5, 500)
    assert [a.status for a in attempts(lab, delivery.id)] == [500] * 5
    assert len(webhook_receiver.posts) == 5


def test_one_sender_at_a_time(sqlite_lab: Lab, webhook_receiver: WebhookReceiver) -> None:
    lab = sqlite_lab
    setup(lab, 1, processors={"video": noop()}, **webhook(webhook_receiver))
    lab.worker(MEDIAMIRROR_NOTIFY_QUIET_SECONDS="3600")
    first, second = Sender(lab.services()), Sender(lab.services())
    later = utcnow() + timedelta(hours=1)
    # Too early for the quiet period: it takes the lease and leaves the notification waiting.
    assert first.run_once(now=utcnow() - timedelta(hours=1)) == SendSummary(0, 0, 1)
    # The first holds the lease: the second sends nothing, and says what waits.
    assert second.run_once(now=later) == SendSummary(0, 0, 1)
    assert webhook_receiver.posts == []
    first.release()
    assert second.run_once(now=later).sent == 1
    second.release()
    assert len(webhook_receiver.wait_for(1)) == 1


def test_quiet_burst_sends_one_by_one(sqlite_lab: Lab, webhook_receiver: WebhookReceiver) -> None:
    lab = sqlite_lab
    setup(lab, 3, processors={"video": noop()}, **webhook(webhook_receiver))
    lab.worker(MEDIAMIRROR_NOTIFY_QUIET_SECONDS="3600")
    flush(lab)
    assert kinds(webhook_receiver) == ["dataset.ready"] * 3
    assert all(d.digest_of is None for d in deliveries(lab))


def test_notification_a_digest_left_out_is_still_sent_once(
    sqlite_lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    """A notification whose transaction committed just after a digest was planned is not
    in that digest although the digest lists higher ids: it still goes out, alone, once."""
    from mediamirror.notify import channels

    lab = sqlite_lab
    setup(lab, 3, processors={"video": noop()}, **webhook(webhook_receiver))
    lab.worker(MEDIAMIRROR_NOTIFY_QUIET_SECONDS="3600")
    first, *rest = [n.id for n in notifications(lab, "dataset.ready")]
    services = lab.services()
    [hook] = channels.configured(services.settings, services.env)
    with lab.catalog.write() as conn:
        conn.execute(
            insert(DELIVERIES).values(
                notification_id=None,
                channel=hook.name,
                digest_of=rest,
                state="sent",
                attempts=1,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
        )
    flush(lab)
    assert kinds(webhook_receiver) == ["dataset.ready"]
    assert [d.notification_id for d in deliveries(lab) if d.digest_of is None] == [first]
    assert flush(lab)[-1] == SendSummary(0, 0, 0)


def test_digest_minutes_sends_one_digest_per_window(
    sqlite_lab: Lab, webhook_receiver: WebhookReceiver
) -> None:
    lab = sqlite_lab
    setup(lab, 3, processors={"video": noop()}, **webhook(webhook_receiver, digest_minutes=15))
    lab.worker()
    sender = Sender(lab.services())
    now = utcnow()
    assert sender.run_once(now=now + timedelta(minutes=5)) == SendSummary(0, 0, 3)
    assert sender.run_once(now=now + timedelta(minutes=16)).sent == 1
    sender.release()
    [delivery] = deliveries(lab)
    assert sorted(delivery.digest_of) == [n.id for n in notifications(lab, "dataset.ready")]
    assert len(webhook_receiver.posts) == 1
