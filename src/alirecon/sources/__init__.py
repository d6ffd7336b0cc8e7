"""Where provider files come from (SFTP, a folder of hand-downloaded files): what each source lists, and the
typed errors of fetching.

Why a package of its own: a source only lists and transfers bytes; deciding what is new, archiving and
ingesting is ``alirecon.fetch``'s job, so every source is recorded the same way (DESIGN.md, one direction
of flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from ..errors import AlireconError, FormatError

__all__ = [
    "AuthError",
    "BadRemoteName",
    "FetchError",
    "HostKeyChanged",
    "HostKeyError",
    "RemoteEntry",
    "TransferError",
    "UnknownHostKey",
    "check_remote_name",
]


class FetchError(AlireconError):
    """A source could not be reached or a transfer could not be completed."""


class HostKeyError(FetchError):
    """The server's host key is not the one recorded for it: refusing to talk to a possible impostor."""

    verb: ClassVar[str] = "is not trusted"

    def __init__(self, host: str, port: int, fingerprint: str, known_hosts: str, detail: str) -> None:
        self.host, self.port, self.fingerprint, self.known_hosts = host, port, fingerprint, known_hosts
        super().__init__(f"host key of {host}:{port} {self.verb} (server offered {fingerprint}); {detail}")


class UnknownHostKey(HostKeyError):
    verb = "is unknown"


class HostKeyChanged(HostKeyError):
    verb = "has CHANGED"


class AuthError(FetchError):
    """The server refused our credentials (the message names the user, never the secret)."""


class TransferError(FetchError):
    """A download ended early or with another size than the server announced."""


class BadRemoteName(FormatError):
    """A name in a remote listing that could escape a folder (``/``, ``..``, NUL, absolute): never used."""

    code = "bad_remote_name"


@dataclass(frozen=True)
class RemoteEntry:
    """One regular file a source lists: ``path`` is the source's full path (remote, or local for a folder)."""

    path: str
    name: str
    size: int
    mtime: datetime | None


def check_remote_name(name: str | bytes, directory: str) -> str:
    """``name`` when it is a plain file name; ``BadRemoteName`` when it could name something else.

    A file name from a server is untrusted input: it may carry a separator, a parent reference, a NUL or
    control characters (issue 3: a hostile listing). Only names that stay one path component are used.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRemoteName("the name is not UTF-8", file=directory, found=repr(name)[:120]) from None
    why = None
    if not name or name in (".", ".."):
        why = "an empty name or a directory reference"
    elif "/" in name or "\\" in name:
        why = "a path separator (or an absolute path)"
    elif "\0" in name:
        why = "a NUL byte"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        why = "a control character"
    elif name.startswith(".."):
        why = "a parent-directory prefix"
    elif len(name.encode("utf-8")) > 255:
        why = "more than 255 bytes"
    if why:
        raise BadRemoteName(f"refused a remote file name with {why}", file=directory,
                            expected="one plain file name", found=repr(name)[:120])
    return name
