"""Email over SMTP: STARTTLS whenever the server offers it (or TLS from the start, smtps://)."""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage

import aiosmtplib

from leanon_notification.retries import Outcome, delivered, permanent, retryable
from leanon_notification.settings import SmtpServer


class EmailSender:
    """One connection per message, at most `connections` at once (mail servers refuse floods)."""

    def __init__(
        self,
        server: SmtpServer,
        timeout_s: float,
        ca_file: str | None = None,
        connections: int = 20,
    ) -> None:
        self._server = server
        self._timeout = timeout_s
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._slots = asyncio.Semaphore(connections)

    async def send(self, message: EmailMessage) -> Outcome:
        async with self._slots:
            return await self._send(message)

    async def _send(self, message: EmailMessage) -> Outcome:
        s = self._server
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.implicit_tls,
                start_tls=False if s.implicit_tls else None,  # None: upgrade when offered
                tls_context=self._tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(500 <= c < 600 for c in codes):
                return permanent(f"smtp {codes[0]}: recipient refused")
            return retryable(f"smtp {codes[0] if codes else '?'}: recipient deferred")
        except aiosmtplib.SMTPAuthenticationError as exc:  # ours to fix; the mail is fine
            return retryable(f"smtp {exc.code}: authentication")
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600 and exc.code not in (552,):
                return permanent(f"smtp {exc.code}")
            return retryable(f"smtp {exc.code}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return retryable(type(exc).__name__)
        return delivered()
