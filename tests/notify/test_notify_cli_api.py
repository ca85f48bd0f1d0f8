"""Seeing and testing notifications (issue 13, part E): ``notify test``, ``notify list``,
``/api/v1/notifications``, ``POST /api/v1/notifications/test`` and the web UI page.

Every peer is real: aiosmtpd and the webhook receiver of ``conftest.py`` on 127.0.0.1, the
CLI through its entry point, ``mediamirror serve`` as a subprocess, headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.support import Deployment, assert_error, wait_for
from helpers import Cli, closed_port
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.notify.outbox import record
from mediamirror.notify.sender import Sender
from mediamirror.notify.status import listing
from mediamirror.services import Services
from web.conftest import screenshot, sign_in

from .conftest import SmtpServer, WebhookReceiver, verify_signature

WEBHOOK_SECRET = "mm-notify-test-webhook-secret-41c7"
SECRET_ENV = "MM_NOTIFY_TEST_WEBHOOK_SECRET"


def make_cli(root: Path, config: dict[str, Any], url: str | None = None, **env: str) -> Cli:
    """A fresh catalog (SQLite unless ``url`` says otherwise) with ``config`` as its
    config.yaml."""
    home = root / "home"
    home.mkdir(parents=True)
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    url = url or f"sqlite:///{root / 'catalog.db'}"
    return Cli(home=home, database_url=url, env={SECRET_ENV: WEBHOOK_SECRET, **env})


def channels_config(smtp: SmtpServer, receiver: WebhookReceiver) -> dict[str, Any]:
    webhook = {"url": receiver.url, "secret": f"${{{SECRET_ENV}}}"}
    return {"email": smtp.email_block(), "notify": {"webhooks": [webhook]}}


def test_notify_test_delivers_on_every_channel(
    tmp_path: Path, catalog_url: str, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    cli = make_cli(tmp_path, channels_config(smtp_server, webhook_receiver), catalog_url)
    result = cli.run("notify", "test")
    lines = result.stdout.splitlines()
    assert len(lines) == 2, str(result)
    email, webhook = lines
    assert email.startswith(f"email: sent to 2 recipients via 127.0.0.1:{smtp_server.port} ("), (
        email
    )
    assert " in " in email and email.endswith(" s"), email
    assert webhook.startswith("webhook:127.0.0.1: delivered to "), webhook
    assert webhook_receiver.url in webhook

    mail = smtp_server.wait_for(1)[0]
    assert mail.subject == "[mediamirror] test message"
    assert sorted(mail.rcpt_tos) == ["me@example.org", "team@example.org"]
    assert "this channel works" in mail.part("text/plain")
    post = webhook_receiver.wait_for(1)[0]
    assert verify_signature(post, WEBHOOK_SECRET)
    assert post.json()["kind"] == "test"

    # The test is kept like any notification, with what each channel did.
    listed = cli.run("notify", "list", "--json").json()
    assert listed["total"] == 1
    (test,) = listed["notifications"]
    assert test["kind"] == "test"
    states = {d["channel"]: (d["state"], d["attempts"]) for d in test["deliveries"]}
    assert states == {"email": ("sent", 1), "webhook:127.0.0.1": ("sent", 1)}
    text = cli.run("notify", "list").stdout
    assert "email: sent, 1 attempt(s)" in text, text
    assert WEBHOOK_SECRET not in result.stdout + result.stderr + text + json.dumps(listed)


def test_a_refused_channel_is_one_line_and_exit_1(
    tmp_path: Path, catalog_url: str, webhook_factory: Any, smtp_server: SmtpServer
) -> None:
    down = smtp_server.email_block(smtp_port=closed_port())
    refusing = webhook_factory(status=500)
    config = {"email": down, "notify": {"webhooks": [{"url": refusing.url}]}}
    cli = make_cli(tmp_path, config, catalog_url)
    result = cli.run("notify", "test", ok=False)
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, str(result)
    assert lines[0].startswith("email: failed after "), lines[0]
    assert lines[1].startswith("webhook:127.0.0.1: failed after "), lines[1]
    assert "500" in lines[1], lines[1]

    (test,) = cli.run("notify", "list", "--json").json()["notifications"]
    by_channel = {d["channel"]: d for d in test["deliveries"]}
    assert by_channel["email"]["state"] == "failed"
    assert by_channel["email"]["last_error"]
    hook = by_channel["webhook:127.0.0.1"]
    assert (hook["state"], hook["last_status"]) == ("failed", 500)
    assert [a["status"] for a in hook["attempt_log"]] == [500]
    assert "last status 500" in cli.run("notify", "list").stdout


def test_without_a_channel_it_says_how_to_configure_one(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, {})
    result = cli.run("notify", "test", ok=False)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: no notification channel is configured"), line
    assert "email:" in line and "webhooks" in line, line
    assert cli.run("notify", "list").stdout.strip() == "no notifications yet"


def test_notify_list_after_a_failed_job(tmp_path: Path, smtp_server: SmtpServer) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "bad.mp4").write_bytes(b"meeting notes, not a video\n" * 40)
    cli = make_cli(
        tmp_path,
        {"email": smtp_server.email_block()},
        MEDIAMIRROR_AUTO_POSTPROCESS="true",
        MEDIAMIRROR_JOB_MAX_ATTEMPTS="1",
        MEDIAMIRROR_TRANSCODE_PRESET="ultrafast",
    )
    cli.run("source", "add", "cams", media.as_uri())
    cli.run("sync", "cams", "--quiet")
    cli.run("worker", "--burst", timeout=120)

    def failed() -> dict[str, Any] | None:
        rows = cli.run("notify", "list", "--json", "--kind", "job.failed").json()
        return next(iter(rows["notifications"]), None)

    row = wait_for(failed, what="a job.failed notification")
    assert row["path"].endswith("bad.mp4"), row
    assert row["facts"].get("reason"), row
    text = cli.run("notify", "list").stdout
    assert "job.failed" in text and "bad.mp4" in text, text
    assert "reason: " in text, text


def test_a_digest_shows_under_every_notification_it_covers(
    tmp_path: Path, catalog_url: str, catalog: Catalog, webhook_receiver: WebhookReceiver
) -> None:
    config = {"notify": {"storm_threshold": 2, "webhooks": [{"url": webhook_receiver.url}]}}
    cli = make_cli(tmp_path, config, catalog_url)
    with catalog.write() as conn:
        for n in range(3):
            path = f"/cams/Video clip-{n}.mp4"
            record(conn, "dataset.ready", facts={"type": "video"}, path=path, dedupe_key=path)
        # Not in notify.on (the default): recorded, never delivered.
        record(conn, "sync.finished", facts={"source": "cams"}, dedupe_key="synced:1")
    settings = load_settings({"home": str(cli.home), "notify_quiet_seconds": 0}, env={})
    summary = Sender(Services(catalog, settings, {})).run_once()
    assert (summary.sent, summary.failed) == (1, 0), summary
    assert len(webhook_receiver.wait_for(1)) == 1

    total, rows = listing(catalog)
    assert total == 4
    assert [r["kind"] for r in rows] == ["sync.finished", *["dataset.ready"] * 3]
    assert rows[0]["deliveries"] == []
    digests = [r["deliveries"] for r in rows[1:]]
    assert all(len(d) == 1 for d in digests), digests
    assert {(d[0]["id"], d[0]["digest_size"], d[0]["state"]) for d in digests} == {
        (digests[0][0]["id"], 3, "sent")
    }
    text = cli.run("notify", "list").stdout
    assert text.count("webhook:127.0.0.1 (digest of 3): sent, 1 attempt(s)") == 3, text
    assert "no delivery yet" in text, text
    page = cli.run("notify", "list", "--json", "--limit", "1", "--offset", "1").json()
    assert page["total"] == 4 and len(page["notifications"]) == 1
    assert page["notifications"][0]["deliveries"][0]["digest_size"] == 3


# -- the API and the web UI --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``serve --no-worker`` on a fresh catalog with email and a webhook configured, and
    an admin and a viewer token."""
    root = tmp_path_factory.mktemp("notify-served")
    smtp, receiver = SmtpServer(), WebhookReceiver()
    cli = make_cli(root, channels_config(smtp, receiver))
    dep = Deployment("sqlite", root, root / "media", cli, None)  # type: ignore[arg-type]
    dep.smtp, dep.receiver = smtp, receiver  # type: ignore[attr-defined]
    try:
        for role in ("admin", "viewer"):
            token = cli.run("token", "create", "--role", role, "--name", f"t-{role}").stdout
            setattr(dep, f"{role}_token", token.strip())
        dep.serve()
        yield dep
    finally:
        for client in dep._clients:
            client.close()
        if dep.process is not None and dep.process.poll() is None:
            dep.process.terminate()
            dep.process.wait(15)
        smtp.stop()
        receiver.stop()


def test_api_needs_an_admin_token(served: Deployment) -> None:
    assert_error(served.viewer.get("/api/v1/notifications"), 403, "admin")
    assert_error(served.viewer.post("/api/v1/notifications/test"), 403, "admin")
    assert_error(served.anon.get("/api/v1/notifications"), 401)
    assert_error(served.admin.get("/api/v1/notifications?offset=99999999999"), 400, "offset")


def test_api_sends_a_test_and_lists_it(served: Deployment) -> None:
    smtp: SmtpServer = served.smtp  # type: ignore[attr-defined]
    before = len(smtp.messages)
    answer = served.admin.post("/api/v1/notifications/test")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is True, body
    assert [r["channel"] for r in body["results"]] == ["email", "webhook:127.0.0.1"]
    assert body["lines"][0].startswith("email: sent to 2 recipients via 127.0.0.1:")
    smtp.wait_for(before + 1)

    page = served.admin.get("/api/v1/notifications", params={"kind": "test", "limit": 1})
    assert page.status_code == 200, page.text
    listed = page.json()
    assert listed["limit"] == 1 and listed["offset"] == 0 and listed["total"] >= 1
    (newest,) = listed["notifications"]
    assert {d["state"] for d in newest["deliveries"]} == {"sent"}
    assert all(len(d["attempt_log"]) == 1 for d in newest["deliveries"])


def _expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_notifications_page_and_send_test_button(browser: Any, served: Deployment) -> None:
    expect = _expect()
    context = browser.new_context(base_url=served.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # A CSP violation (inline script or style) is reported on the console.
        csp = "Content Security Policy"
        page.on("console", lambda m: csp in m.text and errors.append(m.text))
        sign_in(page, served.admin_token)
        page.click("a[data-nav=notifications]")
        page.wait_for_url("**/ui/notifications")
        expect(page.locator("h1.page-title")).to_have_text("Notifications")
        page.click("[data-testid=send-test]")
        lines = page.locator("[data-testid=test-results] li")
        expect(lines).to_have_count(2)
        expect(lines.first).to_have_attribute("data-ok", "true")
        expect(lines.first).to_contain_text("email: sent to 2 recipients")
        row = page.locator("[data-testid=notifications] tbody tr[data-kind=test]").first
        expect(row.locator(".delivery[data-state=sent]")).to_have_count(2)
        screenshot(page, "notifications")
        page.set_viewport_size({"width": 390, "height": 844})
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    finally:
        context.close()
    assert not errors, errors


def test_a_viewer_is_told_the_page_is_for_admins(browser: Any, served: Deployment) -> None:
    expect = _expect()
    context = browser.new_context(base_url=served.url)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        sign_in(page, served.viewer_token)
        page.goto("/ui/notifications")
        expect(page.locator(".empty-title")).to_have_text("Notifications are shown to admins")
        expect(page.locator("[data-testid=send-test]")).to_have_class("btn is-locked")
    finally:
        context.close()
