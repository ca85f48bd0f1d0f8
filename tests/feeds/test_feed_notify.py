"""A dataset's own ``notify`` address (from a feed record) joins the recipients of its
messages: validated, never doubled, never on a digest. The SMTP side is in
test_feed_pipeline.py (one email reaching the owner with the configured recipients)."""

from __future__ import annotations

from typing import Any

import pytest

from mediamirror.notify import message
from mediamirror.notify.config import EmailConfig
from mediamirror.notify.email import EmailChannel
from mediamirror.notify.recipients import address, dataset_recipient, merged


@pytest.mark.parametrize(
    "value",
    [
        "ann@example.org",
        " ann.b+tag@lab.example.org ",
    ],
)
def test_plain_addresses_are_taken(value: str) -> None:
    assert address(value) == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        ["ann@example.org"],
        "",
        "ann",
        "Ann <ann@example.org>",
        "ann@example.org, bob@example.org",
        "ann@example.org\r\nBcc: all@example.org",
        "ann@@example.org",
        "ann@example..org",
        "a" * 250 + "@example.org",
    ],
)
def test_anything_else_is_ignored(value: Any) -> None:
    assert address(value) is None
    assert dataset_recipient({"notify": value}) is None


def test_merged_keeps_order_and_drops_repeats_whatever_the_case() -> None:
    assert merged(["me@example.org", "team@example.org"], ["ME@example.org", "ann@x.org"]) == [
        "me@example.org",
        "team@example.org",
        "ann@x.org",
    ]


def _note(kind: str, **facts: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "kind": kind,
        "path": "/premiere/a1/Video a.mp4",
        "folder_id": 3,
        "facts": facts,
    }


def test_a_single_message_carries_the_dataset_recipient_a_digest_does_not() -> None:
    ready = _note("dataset.ready", type="video", notify="ann@example.org")
    assert message.single(ready, None).recipients == ("ann@example.org",)
    assert message.single(_note("dataset.ready", notify="bad"), None).recipients == ()
    assert message.digest([ready, ready], None).recipients == ()


def test_the_email_goes_to_both_in_one_message() -> None:
    channel = EmailChannel(
        EmailConfig(
            from_addr="pipeline@example.org",
            to_addrs=["me@example.org", "Ann@example.org"],
            smtp_server="127.0.0.1",
        )
    )
    m = message.single(_note("job.failed", reason="boom", notify="ann@example.org"), None)
    assert channel._recipients(m) == ["me@example.org", "Ann@example.org"]  # not twice
    m = message.single(_note("job.failed", reason="boom", notify="bob@example.org"), None)
    assert channel._recipients(m) == ["me@example.org", "Ann@example.org", "bob@example.org"]
    assert channel._compose(m)["To"] == "me@example.org, Ann@example.org, bob@example.org"
