"""Encryption of backup sets with age public keys (the `pyrage` bindings).

The host that takes backups holds only *recipients* (public keys, from
RPGER_AGE_RECIPIENTS_FILE): it can encrypt new sets and never decrypt old
ones. The *identity* (private key, RPGER_AGE_IDENTITY_FILE) is needed to
restore and to deep-verify, and is best kept off that host.

Blob addresses of encrypted sets are keyed: HMAC-SHA256 with the blob-id key
(RPGER_BLOB_ID_KEY_FILE, default `<backup dir>/keys/blob-id.key`, made on first
use) over the plaintext's sha256. Unchanged data still gets the same address
(dedup works), the store cannot test a guess of the plaintext against an
address, and the key decrypts nothing: a thief of the host learns no more than
the live databases already tell. Losing the key only costs dedup against older
blobs (new sets get new addresses); restores never need it.

Errors are `CryptoError`s that name the file, never its content.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

AGE_MAGIC = b"age-encryption.org/v1\n"
KEY_BYTES = 32


class CryptoError(Exception):
    """Keys missing, unreadable or wrong; the message is safe to show."""


class IdentityMissing(CryptoError):
    """An encrypted set, and no RPGER_AGE_IDENTITY_FILE to read it with."""


class WrongIdentity(CryptoError):
    """The identity given does not decrypt this set."""


def _key_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CryptoError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CryptoError(f"{what} file {path} is unreadable ({type(exc).__name__})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load_recipients(path: Path) -> list[Any]:
    """age recipients (`age1...`) and SSH public keys (`ssh-ed25519 ...`, `ssh-rsa ...`), one a line."""
    out: list[Any] = []
    for number, line in enumerate(_key_lines(path, "age recipients"), start=1):
        try:
            if line.startswith("age1"):
                out.append(pyrage.x25519.Recipient.from_str(line))
            elif line.startswith("ssh-"):
                out.append(pyrage.ssh.Recipient.from_str(line))
            else:
                raise ValueError("not an age or SSH public key")
        except (ValueError, pyrage.RecipientError) as exc:
            raise CryptoError(f"age recipients file {path}, line {number}: {exc}") from None
    if not out:
        raise CryptoError(f"age recipients file {path} holds no recipient")
    return out


def load_identities(path: Path) -> list[Any]:
    """age identities (`AGE-SECRET-KEY-1...`, as `age-keygen` writes them, comments allowed)."""
    out: list[Any] = []
    for number, line in enumerate(_key_lines(path, "age identity"), start=1):
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except (ValueError, pyrage.IdentityError):
            # The message would quote the line: it may be a secret.
            raise CryptoError(f"age identity file {path}, line {number}: not an age identity "
                              "(expected AGE-SECRET-KEY-1...)") from None
    if not out:
        raise CryptoError(f"age identity file {path} holds no identity")
    return out


def generate_identity() -> tuple[str, str]:
    """(identity, recipient) of a new X25519 key pair, as age-keygen prints them."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def encrypt_file(src: Path, dest: Path, recipients: list[Any]) -> None:
    try:
        pyrage.encrypt_file(str(src), str(dest), recipients)
    except pyrage.EncryptError as exc:
        raise CryptoError(f"age encryption of {src.name} failed: {exc}") from None


def decrypt_file(src: Path, dest: Path, identities: list[Any], what: str) -> None:
    try:
        pyrage.decrypt_file(str(src), str(dest), identities)
    except pyrage.DecryptError as exc:
        dest.unlink(missing_ok=True)
        raise WrongIdentity(f"{what}: cannot decrypt with the identity in RPGER_AGE_IDENTITY_FILE ({exc}); "
                            "it needs the identity of a recipient the set was encrypted to") from None


def seal(text: str, recipients: list[Any]) -> str:
    """age ciphertext of `text`, base64 (small facts inside a manifest)."""
    return base64.b64encode(pyrage.encrypt(text.encode(), recipients)).decode("ascii")


def unseal(sealed: str, identities: list[Any], what: str) -> str:
    try:
        return bytes(pyrage.decrypt(base64.b64decode(sealed), identities)).decode()
    except pyrage.DecryptError as exc:
        raise WrongIdentity(f"{what}: cannot decrypt with the identity in RPGER_AGE_IDENTITY_FILE ({exc}); "
                            "it needs the identity of a recipient the set was encrypted to") from None
    except (ValueError, UnicodeDecodeError):
        raise CryptoError(f"{what}: sealed field is damaged (not age ciphertext)") from None


def is_age(head: bytes) -> bool:
    return head.startswith(AGE_MAGIC)


@dataclass(frozen=True)
class BlobKey:
    """The keyed-address key of encrypted blobs. It can name blobs, not decrypt them."""

    key: bytes

    @property
    def key_id(self) -> str:
        """Names the key in manifests without revealing it."""
        return hashlib.sha256(b"rpger blob-id key\n" + self.key).hexdigest()[:16]

    def blob_id(self, plain_sha256: str) -> str:
        return hmac.new(self.key, b"rpger-blob-v2\n" + plain_sha256.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def load_or_create(cls, path: Path) -> BlobKey:
        """Read the key; make it (0600, atomically) when the file does not exist yet."""
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            text = secrets.token_hex(KEY_BYTES)
            # Unique per thread too: the chains of one backup run side by side in one process.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                text = path.read_text(encoding="ascii").strip()
            finally:
                tmp.unlink(missing_ok=True)
        except (OSError, UnicodeDecodeError) as exc:
            raise CryptoError(f"blob-id key file {path} is unreadable ({type(exc).__name__})") from None
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise CryptoError(f"blob-id key file {path} does not hold a hex key of at least 16 bytes")
        return cls(key)
