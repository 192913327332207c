"""API keys: made by `deepxray keys new`, kept by the service only as SHA-256 digests in a file.

The keys file (`api_keys_file`) holds one key a line, `key_id:sha256:scopes`, e.g.

    # key_id:sha256 of the key:scopes
    lab-a:5f0c...e1:score,read

Blank lines and lines starting with `#` are skipped. The service re-reads the file when it changes, so removing a
line revokes that key without a restart. A key is a random 256-bit string (`dxr_` and 43 URL-safe characters):
a plain SHA-256 of it cannot be reversed, and needs no salt or slow hash as a password would. The plain key is
shown once, to whoever makes it, and is never stored or logged by the service.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from deepxray.api.errors import ApiError

KEY_PREFIX = "dxr_"
SCOPES = ("score", "read", "review")
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class KeysFileError(ValueError):
    """A keys file that cannot be read as one (the message names the file and line)."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    digest: bytes
    scopes: frozenset[str]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(scope.strip() for scope in text.split(",") if scope.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise KeysFileError(f"unknown scope {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}")
    return scopes


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise KeysFileError(f"a key id is 1-64 letters, digits, '.', '_' or '-', not {key_id!r}")
    return key_id


def key_line(key_id: str, key: str, scopes: frozenset[str] | set[str]) -> str:
    """The keys file's line for `key` (its digest, never the key)."""
    ordered = ",".join(scope for scope in SCOPES if scope in scopes)
    return f"{check_key_id(key_id)}:{digest_of(key).hex()}:{ordered}"


def parse_keys(text: str, source: str = "keys file") -> list[ApiKey]:
    keys, seen = [], set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not _DIGEST.fullmatch(parts[1]):
            raise KeysFileError(f"{source}, line {number}: expected key_id:sha256:scopes (64 hex digits)")
        try:
            key_id, scopes = check_key_id(parts[0]), parse_scopes(parts[2])
        except KeysFileError as error:
            raise KeysFileError(f"{source}, line {number}: {error}") from None
        if key_id in seen:
            raise KeysFileError(f"{source}, line {number}: key id {key_id} is there twice")
        seen.add(key_id)
        keys.append(ApiKey(key_id, bytes.fromhex(parts[1]), scopes))
    return keys


def read_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KeysFileError(f"cannot read the keys file {path}: {error.strerror}") from None
    return parse_keys(text, str(path))


class KeysUnavailableError(ApiError, status=503, code="auth_unavailable"):
    """The keys file cannot be read as one: nobody is let in until it is fixed."""


class ApiKeyFile:
    """The keys of `path`, re-read whenever the file changes (modification time, size or inode)."""

    def __init__(self, path: Path, retry_after_s: float = 1):
        self.path = Path(path).expanduser().resolve()
        self.retry_after_s = retry_after_s
        self._stamp = self._stat()  # before reading: an edit in between is read again at the next request
        self._keys = read_keys(self.path)  # a file that cannot be read stops the replica's start, with its reason
        self._problem: str | None = None

    def _stat(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def keys(self) -> list[ApiKey]:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._keys, self._problem = read_keys(self.path), None
            except KeysFileError as error:
                # Keeping the old keys could keep a key alive that the edit meant to revoke: refuse everyone.
                self._keys, self._problem = [], str(error)
        if self._problem:
            raise KeysUnavailableError(
                f"Access control is misconfigured on the server ({self._problem}); retry later.",
                {"Retry-After": str(max(1, round(self.retry_after_s)))},
            )
        return self._keys

    def find(self, key: str) -> ApiKey | None:
        """The key whose digest matches; every digest is compared, in constant time, whatever matches first."""
        presented = digest_of(key)
        found = None
        for candidate in self.keys():
            if hmac.compare_digest(presented, candidate.digest):
                found = candidate
        return found


def add_key(path: Path, key_id: str, scopes: frozenset[str]) -> str:
    """Makes a key, appends its line to the keys file at `path` (created readable by its owner only) and returns
    the plain key."""
    existing = read_keys(path) if path.exists() else []
    if any(item.key_id == key_id for item in existing):
        raise KeysFileError(f"{path} already has a key {key_id}; revoke it first or choose another id")
    key = new_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as keys_file:
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            keys_file.write("\n")
        keys_file.write(key_line(key_id, key, scopes) + "\n")
    return key


def revoke_key(path: Path, key_id: str) -> None:
    """Removes the line of `key_id` from the keys file, replacing the file in one step (the service sees either
    the old file or the new one, never half of it)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.split(":", 1)[0].strip() != key_id]
    if len(kept) == len(lines):
        raise KeysFileError(f"{path} has no key {key_id}")
    staging = path.with_name(f".{path.name}.new")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as keys_file:
        keys_file.writelines(kept)
    os.replace(staging, path)
