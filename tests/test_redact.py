"""No secret leaves in a message: URL passwords, presigned-URL signatures and known secret
values are hidden by one function, applied to errors, the CLI's error line and logs."""

from __future__ import annotations

import logging

import pytest

from helpers import Cli, assert_one_error_line
from mediamirror.catalog.db import Catalog
from mediamirror.errors import CatalogError, StoreError
from mediamirror.redact import RedactingFilter, redact, redact_url, remember, remember_env

PRESIGNED = (
    "https://127.0.0.1:9000/bkt/a%20b/clip.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=0a1b2c3d4e5f60718293a4b5c6d7e8f9"
)


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("postgresql://u:s3cretpw@db:5432/x", "s3cretpw", "postgresql://u:***@db:5432/x"),
        ("amqp://guest:hunter2xyz@rabbit//", "hunter2xyz", "amqp://guest:***@rabbit//"),
        ("'redis://:pa55word@h:6379/0'", "pa55word", "'redis://:***@h:6379/0'"),
        # An unescaped '@' in the password: everything up to the host is hidden.
        ("postgresql://u:s3c@retpw@host/x failed", "retpw", "postgresql://u:***@host/x failed"),
        (f"Input {PRESIGNED}: Invalid data", "0a1b2c3d4e5f", "X-Amz-Signature=***"),
        (PRESIGNED, "AKIAEXAMPLE", "X-Amz-Credential=***"),
        (
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIAOLD&Signature=abc%2Bdef&Expires=1",
            "abc%2Bdef",
            "AWSAccessKeyId=***&Signature=***&Expires=1",
        ),
        ("https://storage.googleapis.com/b/k?X-Goog-Signature=beefcafe", "beefcafe", "b/k?"),
    ],
)
def test_urls_lose_passwords_and_signatures(text: str, hidden: str, kept: str) -> None:
    assert hidden not in redact(text)
    assert kept in redact(text)


def test_text_without_secrets_is_unchanged() -> None:
    text = "sqlite:////data/catalog.db, http://127.0.0.1:9000/bkt/key.mp4 and user@example.org"
    assert redact(text) == text


def test_known_values_show_as_the_variable_they_came_from() -> None:
    remember("tok-4f9a1c77e2", "MM_REDACT_API_TOKEN")
    remember_env({"MM_REDACT_DB_PASSWORD": "pw-81d2c0", "MM_REDACT_PLAIN": "not-a-secret-7"})
    line = "--token tok-4f9a1c77e2 pw-81d2c0 not-a-secret-7"
    assert redact(line) == "--token ${MM_REDACT_API_TOKEN} ${MM_REDACT_DB_PASSWORD} not-a-secret-7"
    # Too short to hide without hiding ordinary words.
    remember("ab", "MM_REDACT_SHORT")
    assert redact("ab") == "ab"


def test_every_error_message_is_redacted() -> None:
    remember("st0re-secret-99", "MM_REDACT_STORE_SECRET")
    error = StoreError(f"cannot read {PRESIGNED} with st0re-secret-99")
    assert "0a1b2c3d4e5f" not in str(error) and "st0re-secret-99" not in str(error)
    assert "${MM_REDACT_STORE_SECRET}" in str(error)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cretpw@[bad",
        "postgresql:/u:s3cretpw@host:x/x",
        "u:s3cretpw@host",
        "postgresql://u:s3cretpw@host:notaport/x",
        "postgresql+nodriver://u:s3cretpw@h/x",
        "postgresql://u:s3c@retpw@127.0.0.1:1/x",
    ],
)
def test_catalog_errors_never_show_the_database_password(url: str) -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog(url)
    assert "s3cretpw" not in str(caught.value) and "retpw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cretpw@[bad",
        "postgresql:/u:s3cretpw@host:x/x",
        "postgresql://u:s3cretpw@host:notaport/x",
    ],
)
def test_cli_error_line_never_shows_the_database_password(tmp_path: object, url: str) -> None:
    cli = Cli(home=tmp_path / "home", database_url=url)  # type: ignore[operator]
    result = cli.run("source", "list", ok=False)
    line = assert_one_error_line(result)
    assert "s3cretpw" not in result.stderr + result.stdout and "retpw" not in line


def test_redact_url_hides_a_password_it_cannot_parse() -> None:
    assert redact_url("u:s3cretpw@host") == "u:***@host"
    assert redact_url("postgresql:/u:s3cretpw@host:x/x") == "postgresql:/u:***@host:x/x"
    assert redact_url("sqlite:////tmp/catalog.db") == "sqlite:////tmp/catalog.db"


def test_log_records_are_redacted_before_any_handler_formats_them() -> None:
    record = logging.LogRecord(
        "mediamirror.x", logging.WARNING, __file__, 1, "ffmpeg said %s", (PRESIGNED,), None
    )
    try:
        raise RuntimeError(f"reading postgresql://u:s3cretpw@db/x via {PRESIGNED}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "0a1b2c3d4e5f" not in text and "s3cretpw" not in text
    assert "X-Amz-Signature=***" in text
