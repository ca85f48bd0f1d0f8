"""Channels, messages and typed config of notifications, against real peers: aiosmtpd
servers and a webhook receiver on 127.0.0.1, config.yaml read by the real loader, and
``config check`` through the CLI's entry point."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import Cli, assert_one_error_line, closed_port
from mediamirror.config import Settings, load_settings
from mediamirror.errors import ConfigError, DeliveryError
from mediamirror.notify.channels import configured
from mediamirror.notify.config import EmailConfig, WebhookConfig, email_config, notify_config
from mediamirror.notify.email import EmailChannel
from mediamirror.notify.message import Message, digest, single
from mediamirror.notify.webhook import WebhookChannel
from mediamirror.redact import redact

from .conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpServer,
    TlsFiles,
    WebhookReceiver,
    verify_signature,
)

ROOT = Path(__file__).resolve().parents[2]
APP_JS = ROOT / "src/mediamirror/web/ui/static/js/app.js"
PUBLIC = "https://mm.example.org"
WEBHOOK_SECRET = "whsec-4f9a1c-known-secret"

# The PREMIERE team's block as their README has it (list-style to_addrs), with our server.
PREMIERE_BLOCK = """\
email:
  from_addr: "{from_addr}"
  to_addrs:
    - "sample1_recipient@univ-st-etienne.fr"
    - "sample2_recipient@example.com"
    - "sample3_recipient@example.com"
  smtp_server: "{host}"
  smtp_port: {port}
  password: "${{SMTP_PASSWORD}}"
"""


def settings_from(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    """Settings read by the real loader from a config.yaml holding ``text``."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings({"home": str(tmp_path), "config": str(path)}, env=env or {})


def ready(folder_id: int = 12, path: str = "/field/2024/Video GOPR0001.MP4") -> dict[str, Any]:
    return {
        "id": folder_id,
        "kind": "dataset.ready",
        "created_at": "2026-11-30T07:00:00+00:00",
        "path": path,
        "source_id": 1,
        "folder_id": folder_id,
        "job_id": 40 + folder_id,
        "facts": {
            "type": "video",
            "duration": 62.5,
            "fps": 29.97,
            "width": 1920,
            "height": 1080,
            "frames": 1873,
            "size": 1_234_567_890,
            "processor": "video",
            "seconds": 12.3,
            "source": "field",
        },
    }


def failed(job_id: int = 7, path: str = "/field/2024/Video GOPR0002.MP4", **facts: Any) -> dict:
    base = {"processor": "video", "reason": "ffmpeg exited 1", "attempts": 3, "max_attempts": 3}
    return {
        "id": 100 + job_id,
        "kind": "job.failed",
        "created_at": "2026-11-30T07:00:00+00:00",
        "path": path,
        "source_id": 1,
        "folder_id": 13,
        "job_id": job_id,
        "facts": {**base, "log": ["probing", "error: moov atom not found"], **facts},
    }


def sync_event(kind: str, **facts: Any) -> dict[str, Any]:
    return {"id": 9, "kind": kind, "path": "/field", "source_id": 1, "facts": facts}


def email_channel(server: SmtpServer, **extra: Any) -> EmailChannel:
    return EmailChannel(EmailConfig.model_validate(server.email_block(**extra)))


@pytest.fixture
def trust(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """Clients in this process trust the test certificate (as with a private CA)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    return tls_files


# -- email: the PREMIERE block and the security modes --------------------------------------------


def test_premiere_block_works_unchanged_over_starttls(
    smtp_factory: Callable[..., SmtpServer], trust: TlsFiles, tmp_path: Path
) -> None:
    server = smtp_factory(tls="starttls")
    text = PREMIERE_BLOCK.format(from_addr=SMTP_USER, host=server.host, port=server.port)
    settings = settings_from(tmp_path, text, env={"SMTP_PASSWORD": SMTP_PASSWORD})
    conf = email_config(settings)
    assert conf is not None and conf.username == SMTP_USER and conf.security is None
    [channel] = configured(settings, {})
    channel.send(single(ready(), PUBLIC))
    [got] = server.wait_for(1)
    assert got.tls and got.authenticated
    assert [(x.login, x.tls, x.ok) for x in server.logins] == [(SMTP_USER, True, True)]
    assert got.rcpt_tos == conf.to_addrs and got.mail_from == SMTP_USER
    assert got.subject == "[mediamirror] ready: /field/2024/Video GOPR0001.MP4"


def test_password_is_never_sent_in_clear_unless_security_none(smtp_server: SmtpServer) -> None:
    # A server like port 587 without STARTTLS (it offers AUTH in clear: the client must not).
    channel = email_channel(smtp_server, password=SMTP_PASSWORD)
    with pytest.raises(DeliveryError) as caught:
        channel.send(single(ready(), PUBLIC))
    assert "refusing to send the password unencrypted" in str(caught.value)
    assert "security: none" in str(caught.value)
    assert SMTP_PASSWORD not in str(caught.value)
    assert smtp_server.logins == [] and smtp_server.messages == []


def test_security_none_logs_in_to_a_server_that_requires_it(
    smtp_login_server: SmtpServer,
) -> None:
    channel = email_channel(smtp_login_server, password=SMTP_PASSWORD, security="none")
    channel.send(single(ready(), PUBLIC))
    [got] = smtp_login_server.wait_for(1)
    assert got.authenticated and not got.tls
    assert [(x.login, x.ok) for x in smtp_login_server.logins] == [(SMTP_USER, True)]


def test_username_overrides_from_addr_and_a_wrong_password_says_so(
    smtp_login_server: SmtpServer,
) -> None:
    channel = email_channel(
        smtp_login_server, password="not-the-password", security="none", username="robot"
    )
    with pytest.raises(DeliveryError) as caught:
        channel.send(single(ready(), PUBLIC))
    assert caught.value.status == 535
    assert "refused the login of robot" in str(caught.value)
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN): all refused.
    assert {(x.login, x.ok) for x in smtp_login_server.logins} == {("robot", False)}
    assert smtp_login_server.messages == []


def test_no_password_means_no_login(smtp_server: SmtpServer) -> None:
    email_channel(smtp_server).send(single(ready(), PUBLIC))
    [got] = smtp_server.wait_for(1)
    assert not got.authenticated and smtp_server.logins == []


def test_no_password_on_a_server_that_requires_login_fails_with_its_code(
    smtp_login_server: SmtpServer,
) -> None:
    with pytest.raises(DeliveryError) as caught:
        email_channel(smtp_login_server).send(single(ready(), PUBLIC))
    assert caught.value.status == 530
    assert smtp_login_server.messages == []


def test_ssl_mode_talks_tls_from_the_first_byte(
    smtp_factory: Callable[..., SmtpServer], trust: TlsFiles
) -> None:
    server = smtp_factory(tls="implicit")
    channel = email_channel(server, password=SMTP_PASSWORD, security="ssl")
    channel.send(single(ready(), PUBLIC))
    [got] = server.wait_for(1)
    assert got.tls and got.authenticated
    assert "SSL" in channel.check()


def test_starttls_required_but_not_offered_is_an_error(smtp_server: SmtpServer) -> None:
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        email_channel(smtp_server, security="starttls").send(single(ready(), PUBLIC))
    assert smtp_server.messages == []


def test_an_untrusted_certificate_is_refused(
    smtp_factory: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    server = smtp_factory(tls="starttls")
    with pytest.raises(DeliveryError, match="certificate"):
        email_channel(server, password=SMTP_PASSWORD).send(single(ready(), PUBLIC))
    assert server.logins == [] and server.messages == []


def test_a_server_that_refuses_connections_then_comes_back(smtp_down: SmtpServer) -> None:
    channel = email_channel(smtp_down)
    with pytest.raises(DeliveryError) as caught:
        channel.send(single(ready(), PUBLIC))
    assert caught.value.status is None
    assert f"cannot reach SMTP server 127.0.0.1:{smtp_down.port}" in str(caught.value)
    smtp_down.start()
    channel.send(single(ready(), PUBLIC))
    assert len(smtp_down.wait_for(1)) == 1


def test_check_logs_in_without_sending(
    smtp_factory: Callable[..., SmtpServer], trust: TlsFiles
) -> None:
    server = smtp_factory(tls="starttls", auth=True)
    line = email_channel(server, password=SMTP_PASSWORD).check()
    assert line == (
        f"127.0.0.1:{server.port} reachable, STARTTLS, logged in as {SMTP_USER} (nothing sent)"
    )
    assert [x.ok for x in server.logins] == [True]
    assert server.messages == []


# -- messages ------------------------------------------------------------------------------------


def ui_routes() -> list[re.Pattern[str]]:
    """The web UI's routes, read from its router (JavaScript regex literals)."""
    source = APP_JS.read_text(encoding="utf-8")
    return [re.compile(m.replace("\\/", "/")) for m in re.findall(r"re: /(.+?)/,", source)]


def test_ready_email_has_subject_facts_both_parts_and_working_links(
    smtp_server: SmtpServer,
) -> None:
    email_channel(smtp_server).send(single(ready(), PUBLIC + "/"))
    [got] = smtp_server.wait_for(1)
    text, page = got.part("text/plain"), got.part("text/html")
    assert got.subject == "[mediamirror] ready: /field/2024/Video GOPR0001.MP4"
    for fact in (
        "Type: video",
        "Duration: 1 min 02 s",
        "Frame rate: 29.97 fps",
        "Resolution: 1920x1080",
        "Frames: 1,873",
        "Size: 1.2 GB",
    ):
        assert fact in text
    link = f"{PUBLIC}/ui/datasets/12"
    assert f"Dataset: {link}" in text and f'href="{link}"' in page
    path = link.removeprefix(PUBLIC)
    assert any(route.match(path) for route in ui_routes()), path


def test_failed_message_links_the_log_and_escapes_what_came_from_the_bucket() -> None:
    m = single(failed(path="/in/<script>x</script>\nVideo a.mp4", reason="bad <b> & worse"), PUBLIC)
    assert m.subject == "[mediamirror] failed: /in/<script>x</script> Video a.mp4 (video)"
    assert "<script>" not in m.html and "&lt;script&gt;" in m.html
    assert "bad &lt;b&gt; &amp; worse" in m.html
    assert "Reason: bad <b> & worse" in m.text
    assert "error: moov atom not found" in m.text and "Attempts: 3 of 3" in m.text
    assert m.payload["links"]["job_log"] == f"{PUBLIC}/api/v1/jobs/7/log"
    jobs = m.payload["links"]["jobs"].removeprefix(PUBLIC).split("?")[0]
    assert any(route.match(jobs) for route in ui_routes())


@pytest.mark.parametrize(
    ("kind", "subject", "line"),
    [
        ("sync.failed", "[mediamirror] sync failed: field", "Error: bucket gone"),
        ("sync.finished", "[mediamirror] synced: field", "Added: 3"),
    ],
)
def test_sync_messages(kind: str, subject: str, line: str) -> None:
    facts = {"source": "field", "error": "bucket gone" if kind == "sync.failed" else None}
    m = single(sync_event(kind, added=3, changed=1, deleted=0, **facts), None)
    assert m.subject == subject and line in m.text
    assert m.payload["links"]["sources"] == "http://127.0.0.1:8000/ui/sources"


def test_digest_counts_lists_every_failure_and_the_first_50_ready() -> None:
    ns = [ready(i, f"/field/Video {i:03d}.mp4") for i in range(120)]
    ns += [failed(j, f"/field/Video bad{j}.mp4", reason=f"reason {j}") for j in range(3)]
    ns.append(sync_event("sync.failed", source="field", error="bucket gone"))
    m = digest(ns, PUBLIC)
    assert m.subject == "[mediamirror] digest: 120 ready, 4 failed"
    for j in range(3):
        assert f"/field/Video bad{j}.mp4 (video): reason {j}" in m.text
        assert f"{PUBLIC}/api/v1/jobs/{j}/log" in m.text
    assert "sync of field: bucket gone" in m.text
    assert "/field/Video 049.mp4" in m.text and "/field/Video 050.mp4" not in m.text
    assert "and 70 more" in m.text and "and 70 more" in m.html
    assert m.payload["counts"]["ready"] == 120 and len(m.payload["notifications"]) == 124


# -- webhooks ------------------------------------------------------------------------------------


def webhook(receiver: WebhookReceiver, **extra: Any) -> WebhookChannel:
    return WebhookChannel(WebhookConfig.model_validate({"url": receiver.url, **extra}))


def test_webhook_posts_the_event_signed(webhook_receiver: WebhookReceiver) -> None:
    m = single(ready(), PUBLIC)
    webhook(webhook_receiver, secret=WEBHOOK_SECRET).send(m)
    [post] = webhook_receiver.wait_for(1)
    assert post.json() == json.loads(json.dumps(m.payload))
    assert (
        post.header(
            "Content-Type",
        )
        == "application/json; charset=utf-8"
    )
    assert verify_signature(post, WEBHOOK_SECRET)
    assert not verify_signature(post, "another-secret")
    assert (post.header("X-Mediamirror-Timestamp") or "").isdigit()


def test_webhook_slack_format(webhook_receiver: WebhookReceiver) -> None:
    m = single(failed(reason="a <tag> & more"), PUBLIC)
    webhook(webhook_receiver, format="slack").send(m)
    [post] = webhook_receiver.wait_for(1)
    body = post.json()
    assert body["text"] == m.subject
    section = body["blocks"][1]["text"]
    assert section["type"] == "mrkdwn" and "a &lt;tag&gt; &amp; more" in section["text"]
    assert post.header("X-Mediamirror-Signature") is None


def test_webhook_non_2xx_is_a_delivery_error_with_the_status(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.statuses = [503]
    channel = webhook(webhook_receiver)
    with pytest.raises(DeliveryError) as caught:
        channel.send(single(ready(), PUBLIC))
    assert caught.value.status == 503 and "answered 503" in str(caught.value)
    channel.send(single(ready(), PUBLIC))
    assert len(webhook_receiver.wait_for(2)) == 2


def test_webhook_unreachable_has_no_status() -> None:
    conf = WebhookConfig(url=f"http://127.0.0.1:{closed_port()}/hook")
    with pytest.raises(DeliveryError, match="cannot reach webhook") as caught:
        WebhookChannel(conf).send(single(ready(), PUBLIC))
    assert caught.value.status is None


def test_webhook_check_posts_nothing(webhook_factory: Callable[..., WebhookReceiver]) -> None:
    there, gone = webhook_factory(status=405), webhook_factory(status=404)
    assert "reachable (OPTIONS answered 405" in webhook(there).check()
    with pytest.raises(DeliveryError) as caught:
        webhook(gone).check()
    assert caught.value.status == 404
    assert there.posts == [] and gone.posts == []
    assert [r.method for r in there.requests] == ["HEAD", "OPTIONS"]


def test_channel_names_are_stable_and_distinct(tmp_path: Path) -> None:
    hooks = [
        {"url": "https://hooks.example.org/a"},
        {"url": "https://hooks.example.org/b"},
        {"url": "https://hooks.example.org/b"},
        {"url": "https://chat.example.net/x"},
    ]
    settings = settings_from(tmp_path, yaml.safe_dump({"notify": {"webhooks": hooks}}))
    assert [c.name for c in configured(settings, {})] == [
        "webhook:hooks.example.org",
        "webhook:hooks.example.org/b",
        "webhook:hooks.example.org/b#2",
        "webhook:chat.example.net",
    ]


# -- typed config --------------------------------------------------------------------------------


def test_the_issues_notify_block_loads_with_its_bare_on_key(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        notify:
          on: [dataset.ready, job.failed, sync.failed]   # the default
          digest_minutes: 0
          storm_threshold: 20
          webhooks:
            - url: https://hooks.example.org/mediamirror
              secret: "${MM_WEBHOOK_SECRET}"
              format: json
    """)
    settings = settings_from(tmp_path, text, env={"MM_WEBHOOK_SECRET": WEBHOOK_SECRET})
    conf = notify_config(settings)
    assert conf.on == ["dataset.ready", "job.failed", "sync.failed"]
    assert conf.webhooks[0].secret == WEBHOOK_SECRET
    assert WEBHOOK_SECRET not in repr(conf)
    assert email_config(settings) is None


@pytest.mark.parametrize(
    ("block", "key", "expected"),
    [
        ({"email": {"smtp_port": "five"}}, "email.smtp_port", "valid integer"),
        ({"email": {"security": "tls"}}, "email.security", "'starttls', 'ssl' or 'none'"),
        ({"email": {"smtp_prot": 25}}, "email.smtp_prot", "unknown key (expected one of"),
        ({"email": {"to_addrs": []}}, "email.to_addrs", "at least 1 item"),
        ({"email": {"to_addrs": ["me", "x@y"]}}, "email.to_addrs[0]", "an email address"),
        ({"notify": {"on": ["dataset.redy"]}}, "notify.on[0]", "'dataset.ready'"),
        ({"notify": {"digest_minutes": -5}}, "notify.digest_minutes", "greater than or equal"),
        ({"notify": {"webhooks": [{"url": "ftp://x"}]}}, "notify.webhooks[0].url", "http://"),
        (
            {"notify": {"webhooks": [{"url": "https://h", "format": "xml"}]}},
            "notify.webhooks[0].format",
            "'json' or 'slack'",
        ),
    ],
)
def test_config_errors_name_the_file_the_key_path_and_the_expectation(
    tmp_path: Path, block: dict[str, Any], key: str, expected: str
) -> None:
    if "email" in block:
        block["email"] = {**email_block_defaults(), **block["email"]}
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, yaml.safe_dump(block))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'config.yaml'}: ")
    assert f"{key}: " in message and expected in message


def test_a_wrong_secret_is_named_never_shown(tmp_path: Path) -> None:
    block = {"email": {**email_block_defaults(), "password": ["hunter2-secret"]}}
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, yaml.safe_dump(block))
    assert "email.password" in str(caught.value) and "hunter2" not in str(caught.value)


def email_block_defaults() -> dict[str, Any]:
    return {"from_addr": SMTP_USER, "to_addrs": "me@example.org", "smtp_server": "127.0.0.1"}


def test_a_wrong_block_stops_every_command_at_start(sqlite_cli: Cli) -> None:
    sqlite_cli.home.mkdir(parents=True)
    block = {"email": {**email_block_defaults(), "smtp_port": "five-eight-seven"}}
    (sqlite_cli.home / "config.yaml").write_text(yaml.safe_dump(block), encoding="utf-8")
    result = sqlite_cli.run("source", "list", ok=False)
    assert_one_error_line(result, "config.yaml", "email.smtp_port", "valid integer")


# -- config check --------------------------------------------------------------------------------


def write_config(cli: Cli, data: dict[str, Any]) -> None:
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def test_config_check_tests_every_connection_without_sending(
    sqlite_cli: Cli,
    smtp_factory: Callable[..., SmtpServer],
    webhook_receiver: WebhookReceiver,
    tls_files: TlsFiles,
) -> None:
    server = smtp_factory(tls="starttls", auth=True)
    write_config(
        sqlite_cli,
        {
            "email": server.email_block(password="${SMTP_PASSWORD}"),
            "notify": {"webhooks": [{"url": webhook_receiver.url, "secret": "${MM_HOOK_SECRET}"}]},
        },
    )
    env = {
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "MM_HOOK_SECRET": WEBHOOK_SECRET,
        "SSL_CERT_FILE": str(tls_files.cert),
    }
    result = sqlite_cli.run("config", "check", env=env)
    lines = result.stdout.splitlines()
    assert lines == [
        f"ok   config: {sqlite_cli.home / 'config.yaml'} read",
        f"ok   email: from {SMTP_USER} to 2 recipients",
        "ok   notify: on dataset.ready, job.failed, sync.failed; one message per event, "
        "a digest above 20 waiting; 1 webhook",
        f"ok   email: 127.0.0.1:{server.port} reachable, STARTTLS, logged in as {SMTP_USER} "
        "(nothing sent)",
        f"ok   webhook:127.0.0.1: {webhook_receiver.url} reachable (HEAD answered 204; "
        "nothing posted)",
    ], str(result)
    assert server.messages == [] and webhook_receiver.posts == []
    assert [x.ok for x in server.logins] == [True]
    for secret in (SMTP_PASSWORD, WEBHOOK_SECRET):
        assert secret not in result.stdout + result.stderr


def test_config_check_says_what_is_wrong_and_exits_1(
    sqlite_cli: Cli, smtp_login_server: SmtpServer, webhook_factory: Callable[..., Any]
) -> None:
    gone = webhook_factory(status=404)
    write_config(
        sqlite_cli,
        {
            "email": smtp_login_server.email_block(password="${SMTP_PASSWORD}", security="none"),
            "notify": {"webhooks": [{"url": gone.url}]},
        },
    )
    result = sqlite_cli.run("config", "check", env={"SMTP_PASSWORD": "wrong-password"}, ok=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[3].startswith("FAIL email: SMTP 127.0.0.1:") and "535" in lines[3]
    assert lines[4].startswith("FAIL webhook:127.0.0.1: ") and "answered 404" in lines[4]
    assert "wrong-password" not in result.stdout + result.stderr
    assert smtp_login_server.messages == [] and gone.posts == []


def test_config_check_reports_a_wrong_block_as_a_line(sqlite_cli: Cli) -> None:
    write_config(sqlite_cli, {"email": {**email_block_defaults(), "security": "tls"}})
    result = sqlite_cli.run("config", "check", ok=False)
    assert result.returncode == 1
    [fail] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert fail.startswith(f"FAIL email: {sqlite_cli.home / 'config.yaml'}: email.security: ")
    assert "ok   notify: " in result.stdout


def test_message_is_one_shape_for_every_channel() -> None:
    m = single(ready(), PUBLIC)
    assert isinstance(m, Message) and m.payload["subject"] == m.subject
    assert m.payload["kind"] == "dataset.ready" and m.payload["folder_id"] == 12


@pytest.mark.parametrize(
    ("port", "security", "mode"),
    [(465, None, "ssl"), (587, None, None), (465, "starttls", "starttls"), (25, "none", "none")],
)
def test_security_defaults_to_ssl_on_port_465_only(
    port: int, security: str | None, mode: str | None
) -> None:
    conf = EmailConfig.model_validate(
        {**email_block_defaults(), "smtp_port": port, "security": security}
    )
    assert conf.mode == mode


def test_a_password_written_in_the_file_is_hidden_from_output(
    smtp_login_server: SmtpServer, tmp_path: Path
) -> None:
    literal = "Premiere-Literal-Pa55"  # as PREMIERE's README writes it: in the file itself
    block = smtp_login_server.email_block(password=literal, security="none", username="x")
    settings = settings_from(tmp_path, yaml.safe_dump({"email": block}))
    [channel] = configured(settings, {})
    with pytest.raises(DeliveryError) as caught:
        channel.send(single(ready(), PUBLIC))
    assert caught.value.status == 535
    assert redact(f"login {literal} refused") == "login *** refused"
