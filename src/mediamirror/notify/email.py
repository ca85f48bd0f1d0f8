"""The email channel: one multipart/alternative message (text + HTML) over SMTP.

Security, as ``email.security`` says: ``ssl`` (TLS from the first byte, the default on port
465), ``starttls`` (required: a server that does not offer it is an error), ``none`` (plain
text, never TLS), or unset (STARTTLS when the server offers it). The password is sent only
over an encrypted connection, unless ``security: none`` allows it in clear; without a
password there is no login. Certificates are verified against the system's trust store
(``SSL_CERT_FILE`` points OpenSSL at a private CA).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mediamirror.errors import DeliveryError
from mediamirror.notify.config import EmailConfig
from mediamirror.notify.message import Message
from mediamirror.notify.recipients import address, merged


class EmailChannel:
    """Sends messages to ``to_addrs`` through the configured SMTP server."""

    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    @property
    def where(self) -> str:
        return f"{self.config.smtp_server}:{self.config.smtp_port}"

    def send(self, m: Message) -> None:
        msg = self._compose(m)
        with self._session() as (smtp, _):
            try:
                # Some recipients refused, others accepted: delivered (a retry would send
                # the others a second copy); the server's log names the refused ones.
                smtp.send_message(
                    msg, from_addr=self.config.from_addr, to_addrs=self._recipients(m)
                )
            except smtplib.SMTPRecipientsRefused as exc:
                raise DeliveryError(
                    f"SMTP {self.where} refused every recipient: {_first_refusal(exc.recipients)}"
                ) from None
            except smtplib.SMTPResponseException as exc:
                raise _reply_error(f"SMTP {self.where} refused the message", exc) from None

    def _recipients(self, m: Message) -> list[str]:
        """``to_addrs`` plus the message's own recipients (a dataset's ``notify``
        address), each once: one email for everyone, never a second copy."""
        return merged(self.config.to_addrs, (a for a in m.recipients if address(a)))

    def check(self) -> str:
        """Connect, EHLO, STARTTLS and log in as configured, without sending a message."""
        with self._session() as (_, steps):
            return f"{self.where} reachable, {', '.join(steps)} (nothing sent)"

    def _compose(self, m: Message) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = m.subject
        msg["From"] = self.config.from_addr
        msg["To"] = ", ".join(self._recipients(m))
        msg["Date"] = formatdate(localtime=True)
        domain = self.config.from_addr.rpartition("@")[2] or None
        msg["Message-ID"] = make_msgid("mediamirror", domain=domain)
        msg.set_content(m.text)
        msg.add_alternative(m.html, subtype="html")
        return msg

    @contextmanager
    def _session(self) -> Iterator[tuple[smtplib.SMTP, list[str]]]:
        """An SMTP session ready to send: connected, encrypted as configured, logged in.
        Yields the session and what was done (for ``check``)."""
        smtp = self._connect()
        try:
            steps = self._secure(smtp)
            steps.append(self._login(smtp, encrypted="no TLS" not in steps))
            yield smtp, steps
        except smtplib.SMTPResponseException as exc:
            raise _reply_error(f"SMTP {self.where}", exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {self.where}: {_reason(exc)}") from None
        finally:
            _close(smtp)

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        try:
            if c.mode == "ssl":
                return smtplib.SMTP_SSL(
                    c.smtp_server, c.smtp_port, timeout=c.timeout, context=_tls_context()
                )
            return smtplib.SMTP(c.smtp_server, c.smtp_port, timeout=c.timeout)
        except smtplib.SMTPResponseException as exc:
            raise _reply_error(f"SMTP {self.where} refused the connection", exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"cannot reach SMTP server {self.where}: {_reason(exc)}") from None

    def _secure(self, smtp: smtplib.SMTP) -> list[str]:
        mode = self.config.mode
        smtp.ehlo()
        if mode == "ssl":
            return ["SSL"]
        if mode == "none" or (mode is None and not smtp.has_extn("starttls")):
            return ["no TLS"]
        if not smtp.has_extn("starttls"):
            raise DeliveryError(
                f"SMTP {self.where} does not offer STARTTLS, which email.security: starttls "
                "requires"
            )
        smtp.starttls(context=_tls_context())
        smtp.ehlo()
        return ["STARTTLS"]

    def _login(self, smtp: smtplib.SMTP, *, encrypted: bool) -> str:
        c = self.config
        if c.password is None:
            return "no login (no password configured)"
        if not encrypted and c.security != "none":
            raise DeliveryError(
                f"SMTP {self.where} offers no STARTTLS: refusing to send the password "
                "unencrypted; use a server or port with TLS (email.security: starttls or "
                "ssl), or set email.security: none to allow it"
            )
        assert c.username is not None  # defaults to from_addr
        try:
            smtp.login(c.username, c.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise _reply_error(
                f"SMTP {self.where} refused the login of {c.username}", exc
            ) from None
        return f"logged in as {c.username}"


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _reply_error(what: str, exc: smtplib.SMTPResponseException) -> DeliveryError:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
    text = " ".join(text.split())
    return DeliveryError(f"{what}: {exc.smtp_code} {text}".rstrip(), status=exc.smtp_code)


def _first_refusal(recipients: dict[str, tuple[int, bytes]]) -> str:
    for addr, (code, reply) in recipients.items():
        return f"{addr}: {code} {reply.decode(errors='replace')}"
    return "no recipient accepted"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
