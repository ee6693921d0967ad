"""The bounce mailbox over IMAP (the standard library's `imaplib`): list the unseen messages of
one folder, read them without marking them, flag the ones handled `\\Seen`, and set aside the ones
left alone (keyword `$LoyaltyMailIgnored`, so that they stay unread for people; `\\Seen` on a server
that keeps no keywords) so that they are not read again. The connection is
implicit TLS (`tls: true`), STARTTLS (`tls: starttls`) or plain (`tls: false`); certificates are
checked against the system's trusted authorities.

Messages are read with `BODY.PEEK[]`, so reading never changes a flag: only `mark_seen` does, after
what a message says has been committed. A read-only session (`EXAMINE`) is used for a dry run, so
nothing in the mailbox can change. Errors name the server and the user, never the password.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from ..config import BounceMailboxSettings
from ..errors import LoyaltyMailError

MAX_MESSAGES = 500               # read in one poll at most; the next poll takes the rest
IGNORED = "$LoyaltyMailIgnored"  # the keyword of a message left alone
MAX_BYTES = 5 * 1024 * 1024      # a bigger message is left alone with the reason
_SIZE = re.compile(rb"UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+)")


class MailboxError(LoyaltyMailError):
    """The bounce mailbox cannot be reached, logged in to or read."""


@dataclass(frozen=True)
class Fetched:
    """One message of the mailbox: its UID, and its bytes (None when it is too big to read)."""

    uid: str
    size: int
    raw: bytes | None


class Mailbox(Protocol):
    """What the bounce poller needs of a mailbox."""

    backlog: int  # unseen messages past the limit of this poll, for the next one

    def unseen(self) -> Iterator[Fetched]: ...

    def mark_seen(self, uid: str) -> None: ...

    def set_aside(self, uid: str) -> str: ...


class ImapMailbox:
    """One IMAP session on the configured folder; use as a context manager."""

    def __init__(self, settings: BounceMailboxSettings, *, readonly: bool = False,
                 limit: int = MAX_MESSAGES) -> None:
        self.settings = settings
        self.readonly = readonly
        self.limit = limit
        self.backlog = 0
        self.keywords = False  # whether the folder keeps our keyword
        self._imap: imaplib.IMAP4 | None = None

    @property
    def where(self) -> str:
        s = self.settings
        return f"imap{'s' if s.tls is True else ''}://{s.user}@{s.imap}:{s.imap_port}/{s.folder}"

    def __enter__(self) -> ImapMailbox:
        s = self.settings
        password = s.require_password()  # ConfigError (before any connection) when it is not set
        timeout = s.timeout.total_seconds()
        try:
            if s.tls is True:
                self._imap = imaplib.IMAP4_SSL(s.imap, s.imap_port, ssl_context=ssl.create_default_context(),
                                               timeout=timeout)
            else:
                self._imap = imaplib.IMAP4(s.imap, s.imap_port, timeout=timeout)
                if s.tls == "starttls":
                    self._imap.starttls(ssl.create_default_context())
        except (OSError, imaplib.IMAP4.error) as exc:
            self._close()
            raise MailboxError(f"cannot reach the bounce mailbox {self.where}: {_reason(exc)}") from None
        try:
            self._imap.login(s.user, password)
        except (OSError, imaplib.IMAP4.error) as exc:
            self._close()
            raise MailboxError(f"the bounce mailbox {self.where} refused the login: {_reason(exc)} "
                               "(check sending.bounces.user and the password's environment variable)") from None
        status, answer = self._call(lambda imap: imap.select(_quoted(s.folder), readonly=self.readonly))
        if status != "OK":
            self._close()
            raise MailboxError(f"the bounce mailbox has no folder '{s.folder}' ({self.where}): "
                               f"{_answer(answer)}")
        _, flags = self._call(lambda imap: imap.response("PERMANENTFLAGS"))
        self.keywords = keeps_keyword(flags)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def unseen(self) -> Iterator[Fetched]:
        """The unseen messages not set aside, oldest first, at most `limit` of them (`backlog`:
        how many more there are)."""
        status, answer = self._call(lambda imap: imap.uid("SEARCH", "UNSEEN", "UNKEYWORD", IGNORED))
        if status != "OK":
            raise MailboxError(f"searching {self.where} failed: {_answer(answer)}")
        uids = (answer[0] or b"").split() if answer else []
        self.backlog = max(0, len(uids) - self.limit)
        for uid_bytes in uids[:self.limit]:
            uid = uid_bytes.decode("ascii")
            size = self._size(uid)
            if size > MAX_BYTES:
                yield Fetched(uid, size, None)
                continue
            status, answer = self._call(lambda imap: imap.uid("FETCH", uid, "(BODY.PEEK[])"))
            raw = next((item[1] for item in answer or [] if isinstance(item, tuple)), None)
            if status != "OK" or raw is None:
                continue  # expunged meanwhile
            yield Fetched(uid, size, raw)

    def mark_seen(self, uid: str) -> None:
        status, answer = self._call(lambda imap: imap.uid("STORE", uid, "+FLAGS", "(\\Seen)"))
        if status != "OK":
            raise MailboxError(f"flagging message {uid} of {self.where} \\Seen failed: {_answer(answer)}")

    def set_aside(self, uid: str) -> str:
        """Flag a message left alone so that no poll reads it again: our keyword where the folder
        keeps keywords (the message stays unread for people), else `\\Seen`. Returns the flag."""
        flag = IGNORED if self.keywords else "\\Seen"
        status, answer = self._call(lambda imap: imap.uid("STORE", uid, "+FLAGS", f"({flag})"))
        if status != "OK":
            raise MailboxError(f"flagging message {uid} of {self.where} {flag} failed: {_answer(answer)}")
        return flag

    def _size(self, uid: str) -> int:
        status, answer = self._call(lambda imap: imap.uid("FETCH", uid, "(RFC822.SIZE)"))
        for item in answer or []:
            line = item[0] if isinstance(item, tuple) else item
            match = _SIZE.search(line) if isinstance(line, bytes) else None
            if match:
                return int(match.group(2) or match.group(3))
        return 0

    def _call(self, command: Callable[[imaplib.IMAP4], tuple[str, Any]]) -> tuple[str, Any]:
        if self._imap is None:
            raise MailboxError("the bounce mailbox is not open")
        try:
            return command(self._imap)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"the bounce mailbox {self.where} failed: {_reason(exc)}") from None

    def _close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            if imap.state == "SELECTED":
                imap.close()
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # the connection is gone either way


def keeps_keyword(permanent_flags: object) -> bool:
    """Whether a folder whose PERMANENTFLAGS answer is this keeps our keyword: it lists it, or
    `\\*` (new keywords may be created)."""
    parts = permanent_flags if isinstance(permanent_flags, list) else [permanent_flags]
    flags = " ".join(p.decode("ascii", "replace") if isinstance(p, bytes) else str(p) for p in parts if p)
    found = flags.strip("() ").split()
    return "\\*" in found or IGNORED.lower() in (f.lower() for f in found)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _answer(answer: object) -> str:
    parts = answer if isinstance(answer, list) else [answer]
    text = " ".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts if p)
    return text[:300] or "no answer"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    said = exc.args[0] if len(exc.args) == 1 else None  # imaplib's errors carry the server's bytes
    if isinstance(said, bytes):
        return said.decode("utf-8", "replace")[:300] or type(exc).__name__
    return (str(exc) or type(exc).__name__)[:300]
