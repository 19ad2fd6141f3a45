"""The encrypted secrets store, ``$SPACEBOT_HOME/secrets.enc``, and where its master key comes from.

Config strings say ``secret:NAME``; the values live here, encrypted with AES-256-GCM under one
32-byte master key found by :func:`find_master_key`, in this order:

1. the systemd credential ``$CREDENTIALS_DIRECTORY/spacebot-master-key`` (``LoadCredential=``);
2. the environment variable ``SPACEBOT_MASTER_KEY``: 32 bytes in hex or base64, or any other text,
   which is then a passphrase (Argon2id, with the salt kept in the store's header);
3. the key file ``$SPACEBOT_HOME/master.key``, which must not be readable by group or others.

A credential or key file holds the 32 raw bytes (what :func:`create_key_file` writes) or their hex
or base64 text.

File format (JSON, UTF-8, mode 0600, replaced atomically on every write)::

    {
      "format": "spacebot-secrets",
      "version": 1,
      "kdf": null,                          # or, when the key came from a passphrase:
                                            # {"name": "argon2id", "salt": B64, "iterations": 3,
                                            #  "lanes": 4, "memory_cost": 65536}  (KiB)
      "check": {"nonce": B64, "ciphertext": B64},
      "entries": [{"name": "OPENAI", "category": "system", "nonce": B64, "ciphertext": B64}, ...]
    }

``B64`` is standard base64. Every ciphertext is AES-256-GCM with a fresh 12-byte nonce; its
associated data is ``spacebot-secrets/1``, the entry name and its category, NUL-separated, so an
entry cannot be renamed, re-categorised or swapped with another without failing to decrypt.
``check`` encrypts nothing under the associated data ``spacebot-secrets/1\\0check``: it tells a
wrong key from a tampered entry, also in a store with no entries. Names and categories are stored
in the clear (``spacebot secrets list`` shows them); values never are.

Opening a store decrypts every entry, so a store is either wholly readable or refused with an
error naming the file and the key source tried; nothing is half unlocked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from spacebot.errors import SpacebotError

Category = Literal["system", "tool"]
"""``system``: used by Spacebot itself (provider keys, the web chat token); ``tool``: handed to
tool programs that need it."""

CATEGORIES: tuple[Category, ...] = get_args(Category)

STORE_FILE = "secrets.enc"
KEY_FILE = "master.key"
CREDENTIAL_NAME = "spacebot-master-key"
ENV_VAR = "SPACEBOT_MASTER_KEY"

FORMAT = "spacebot-secrets"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""A secret's name, as ``secret:NAME`` writes it."""

_AD_PREFIX = f"spacebot-secrets/{VERSION}".encode()
_CHECK_AD = _AD_PREFIX + b"\0check"


class SecretsError(SpacebotError):
    """The store or its master key cannot be used; the message names the file or key source tried."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters of a passphrase-derived master key, kept in the store's header."""

    salt: bytes
    iterations: int = 3
    lanes: int = 4
    memory_cost: int = 64 * 1024
    """KiB (RFC 9106's second recommended setting: t=3, p=4, 64 MiB)."""

    @classmethod
    def fresh(cls) -> KdfParams:
        """New parameters with a random salt."""
        return cls(salt=secrets.token_bytes(SALT_BYTES))

    def derive(self, passphrase: str) -> bytes:
        """The 32-byte key for ``passphrase``."""
        kdf = Argon2id(
            salt=self.salt,
            length=KEY_BYTES,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_cost,
        )
        return kdf.derive(passphrase.encode("utf-8"))

    def to_json(self) -> dict[str, Any]:
        """The header's ``kdf`` object."""
        return {
            "name": "argon2id",
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "lanes": self.lanes,
            "memory_cost": self.memory_cost,
        }

    @classmethod
    def from_json(cls, raw: object, path: Path) -> KdfParams:
        """Parse and bound a header's ``kdf`` (a tampered header must not make us allocate gigabytes)."""
        if not isinstance(raw, dict) or raw.get("name") != "argon2id":
            raise SecretsError(f"{path}: unknown key derivation {raw!r} (expected argon2id)")
        try:
            params = cls(
                salt=_unb64(raw["salt"]),
                iterations=int(raw["iterations"]),
                lanes=int(raw["lanes"]),
                memory_cost=int(raw["memory_cost"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SecretsError(f"{path}: malformed kdf header: {exc}") from None
        if not (
            len(params.salt) >= 8
            and 1 <= params.iterations <= 16
            and 1 <= params.lanes <= 16
            and 8 * params.lanes <= params.memory_cost <= 1024 * 1024
        ):
            raise SecretsError(f"{path}: kdf parameters out of range: {params.to_json()!r}")
        return params


@dataclass(frozen=True)
class KeySource:
    """Where a master key came from (never the key itself)."""

    kind: Literal["credential", "env", "file", "passphrase"]
    where: str
    """The credential or key file path, the variable name, or ``"passphrase"``."""
    kdf: KdfParams | None = None
    """Set when the key was derived from a passphrase (``passphrase``, or ``env`` holding text)."""

    def describe(self) -> str:
        """``master key from SPACEBOT_MASTER_KEY``, ``master key from key file /x/master.key``..."""
        if self.kind == "passphrase":
            return "the passphrase"
        label = {"credential": "systemd credential ", "env": "", "file": "key file "}[self.kind]
        how = " (used as a passphrase)" if self.kind == "env" and self.kdf is not None else ""
        return f"master key from {label}{self.where}{how}"


def find_master_key(home: Path, environ: Mapping[str, str]) -> tuple[bytes, KeySource] | None:
    """The master key and its source, from the first source present (see the module docstring).

    Returns None when there is no source at all. A source that is present but unusable (unreadable,
    the wrong size, a key file readable by others) raises :class:`SecretsError` naming it rather
    than falling through to the next one.
    """
    return _find_key(home, environ, _stored_kdf(home / STORE_FILE))


def _find_key(
    home: Path, environ: Mapping[str, str], stored_kdf: KdfParams | None
) -> tuple[bytes, KeySource] | None:
    directory = environ.get("CREDENTIALS_DIRECTORY", "")
    if directory:
        path = Path(directory) / CREDENTIAL_NAME
        data = _read_key_bytes(path, "systemd credential", check_mode=False)
        if data is not None:
            return data, KeySource("credential", str(path))
    text = environ.get(ENV_VAR, "")
    if text:
        key = _parse_key_text(text)
        if key is not None:
            return key, KeySource("env", ENV_VAR)
        kdf = stored_kdf or KdfParams.fresh()
        return kdf.derive(text), KeySource("env", ENV_VAR, kdf)
    path = home / KEY_FILE
    data = _read_key_bytes(path, "key file", check_mode=True)
    if data is not None:
        return data, KeySource("file", str(path))
    return None


def _read_key_bytes(path: Path, what: str, *, check_mode: bool) -> bytes | None:
    """The key in ``path``, None when the file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsError(f"{what} {path}: cannot open: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretsError(f"{what} {path}: not a regular file")
        if check_mode and info.st_mode & 0o077:
            raise SecretsError(
                f"{what} {path}: mode {stat.S_IMODE(info.st_mode):04o} lets group or others read or "
                f"change it; refusing to use it (run `chmod 600 {path}`)"
            )
        data = file.read(4096)
    if len(data) == KEY_BYTES:
        return data
    try:
        key = _parse_key_text(data.decode("ascii").strip())
    except UnicodeDecodeError:
        key = None
    if key is None:
        raise SecretsError(f"{what} {path}: must hold {KEY_BYTES} raw bytes or their hex or base64 text")
    return key


def _parse_key_text(text: str) -> bytes | None:
    """``text`` as 32 bytes in hex or base64 (standard or URL-safe, padded or not), else None."""
    text = text.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{64}", text):
        return bytes.fromhex(text)
    if re.fullmatch(r"[A-Za-z0-9+/_-]{43}=?", text):
        try:
            key = base64.b64decode(text.rstrip("=").replace("-", "+").replace("_", "/") + "=", validate=True)
        except binascii.Error:
            return None
        if len(key) == KEY_BYTES:
            return key
    return None


def create_key_file(home: Path) -> Path:
    """Write 32 random bytes to ``home/master.key`` (mode 0600) and return its path.

    Raises :class:`SecretsError` when the file already exists (it would orphan the store) or
    cannot be written.
    """
    path = home / KEY_FILE
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise SecretsError(f"key file {path} already exists; not replacing it") from None
    except OSError as exc:
        raise SecretsError(f"key file {path}: cannot create: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
        _keep_owner(fd, home)
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise SecretsError(f"key file {path}: cannot write: {exc.strerror or exc}") from None
    os.close(fd)
    _fsync_dir(home)
    return path


def check_name(name: str) -> str:
    """``name`` if it is a valid secret name, else raise :class:`SecretsError` saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SecretsError(
            f"invalid secret name {name!r}: use 1-64 letters, digits and '_', not starting with a digit"
        )
    return name


class SecretStore:
    """The decrypted contents of ``secrets.enc``, and the key to write it back."""

    path: Path
    """``$SPACEBOT_HOME/secrets.enc``."""
    source: KeySource | None
    """Where the key came from; None when no store exists and no key was found (read-only then)."""

    def __init__(
        self,
        path: Path,
        key: bytes | None,
        source: KeySource | None,
        entries: dict[str, tuple[Category, str]],
    ) -> None:
        self.path = path
        self.source = source
        self._key = key
        self._entries = entries

    @classmethod
    def open(
        cls, home: Path, environ: Mapping[str, str] | None = None, *, passphrase: str | None = None
    ) -> SecretStore:
        """Open (and fully decrypt) the store in ``home``.

        Args:
            home: ``$SPACEBOT_HOME``.
            environ: where ``CREDENTIALS_DIRECTORY`` and ``SPACEBOT_MASTER_KEY`` are looked up
                (default ``os.environ``).
            passphrase: derive the key from this instead of looking for a master key.

        Raises:
            SecretsError: the store exists but no key was found, the key does not open it, an entry
                does not decrypt, or the file is not a store.
        """
        env = os.environ if environ is None else environ
        path = home / STORE_FILE
        doc = _read_doc(path)
        stored_kdf = KdfParams.from_json(doc["kdf"], path) if doc is not None and doc["kdf"] else None
        found: tuple[bytes, KeySource] | None
        if passphrase is not None:
            if not passphrase:
                raise SecretsError("empty passphrase")
            if doc is not None and stored_kdf is None:
                raise SecretsError(f"{path} was written with a master key, not a passphrase")
            kdf = stored_kdf or KdfParams.fresh()
            found = kdf.derive(passphrase), KeySource("passphrase", "passphrase", kdf)
        else:
            found = _find_key(home, env, stored_kdf)
        if doc is None:
            # Nothing to decrypt: an empty store, which needs a key only to be written.
            return cls(path, found[0], found[1], {}) if found else cls(path, None, None, {})
        if found is None:
            raise SecretsError(
                f"no master key to open {path}: looked for the systemd credential {CREDENTIAL_NAME} "
                f"($CREDENTIALS_DIRECTORY), {ENV_VAR} and the key file {home / KEY_FILE}"
            )
        key, source = found
        aead = AESGCM(key)
        try:
            aead.decrypt(doc["check"][0], doc["check"][1], _CHECK_AD)
        except InvalidTag:
            hint = ""
            if stored_kdf is not None and source.kdf is None:
                hint = " (the store was written with a passphrase)"
            elif stored_kdf is None and source.kdf is not None:
                hint = f" (the store was written with a {KEY_BYTES}-byte key, not a passphrase)"
            raise SecretsError(f"{source.describe()} does not open {path}{hint}") from None
        entries: dict[str, tuple[Category, str]] = {}
        for name, category, nonce, ciphertext in doc["entries"]:
            try:
                value = aead.decrypt(nonce, ciphertext, _entry_ad(name, category)).decode("utf-8")
            except (InvalidTag, UnicodeDecodeError):
                raise SecretsError(
                    f"{path}: entry {name!r} does not decrypt with {source.describe()} although the "
                    "key is right: the file was altered; nothing was opened"
                ) from None
            entries[name] = (category, value)
        return cls(path, key, source, entries)

    def get(self, name: str) -> str | None:
        """The value of secret ``name``, or None."""
        entry = self._entries.get(name)
        return entry[1] if entry else None

    def set(self, name: str, value: str, category: Category = "system") -> None:
        """Store ``value`` under ``name`` (replacing any previous one) and rewrite the file."""
        check_name(name)
        if category not in CATEGORIES:
            raise SecretsError(f"secret {name!r}: category {category!r} is not one of {list(CATEGORIES)}")
        if not isinstance(value, str) or not value:
            raise SecretsError(f"secret {name!r}: the value is empty")
        entries = dict(self._entries)
        entries[name] = (category, value)
        self._write(entries)
        self._entries = entries

    def remove(self, name: str) -> bool:
        """Delete secret ``name``; False when there was none."""
        if name not in self._entries:
            return False
        entries = dict(self._entries)
        del entries[name]
        self._write(entries)
        self._entries = entries
        return True

    def names(self) -> list[tuple[str, Category]]:
        """Every secret's name and category, sorted by name."""
        return sorted((name, category) for name, (category, _value) in self._entries.items())

    def values(self, category: Category | None = None) -> dict[str, str]:
        """Name -> value of every secret (of ``category`` only, when given)."""
        return {
            name: value
            for name, (cat, value) in sorted(self._entries.items())
            if category is None or cat == category
        }

    def _write(self, entries: dict[str, tuple[Category, str]]) -> None:
        if self._key is None or self.source is None:
            home = self.path.parent
            raise SecretsError(
                f"no master key to encrypt {self.path} with: looked for the systemd credential "
                f"{CREDENTIAL_NAME} ($CREDENTIALS_DIRECTORY), {ENV_VAR} and the key file "
                f"{home / KEY_FILE} (`spacebot init` creates one)"
            )
        aead = AESGCM(self._key)
        check_nonce = secrets.token_bytes(NONCE_BYTES)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "kdf": self.source.kdf.to_json() if self.source.kdf else None,
            "check": {
                "nonce": _b64(check_nonce),
                "ciphertext": _b64(aead.encrypt(check_nonce, b"", _CHECK_AD)),
            },
            "entries": [],
        }
        for name, (category, value) in sorted(entries.items()):
            nonce = secrets.token_bytes(NONCE_BYTES)
            ciphertext = aead.encrypt(nonce, value.encode("utf-8"), _entry_ad(name, category))
            doc["entries"].append(
                {"name": name, "category": category, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
            )
        write_private(self.path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file beside it, then a rename).

    Readers see the old file or the new one, never a part; the new file has ``mode`` whatever the
    umask, and its directory (created 0700 if missing) is synced so the rename survives a crash.
    Run as root, the new file keeps the owner of the old one (see :func:`_keep_owner`).
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            _keep_owner(fd, path, directory)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SecretsError(f"{path}: cannot write: {exc.strerror or exc}") from None
    _fsync_dir(directory)


def _keep_owner(fd: int, *like: Path) -> None:
    """Run as root, give the file open at ``fd`` the owner of the first of ``like`` that exists.

    `sudo spacebot secrets set` in the service's home must not leave a root-owned store or key
    file there that the service user can no longer read.
    """
    if os.geteuid() != 0:
        return
    for existing in like:
        try:
            info = os.stat(existing)
        except FileNotFoundError:
            continue
        os.fchown(fd, info.st_uid, info.st_gid)
        return


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _entry_ad(name: str, category: str) -> bytes:
    return b"\0".join((_AD_PREFIX, name.encode("utf-8"), category.encode("utf-8")))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None


def _stored_kdf(path: Path) -> KdfParams | None:
    doc = _read_doc(path)
    return KdfParams.from_json(doc["kdf"], path) if doc is not None and doc["kdf"] else None


def _read_doc(path: Path) -> dict[str, Any] | None:
    """The store's header and entries, checked for shape (not yet decrypted); None: no store."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SecretsError(f"{path}: not a secrets store (invalid JSON: {exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SecretsError(f'{path}: not a secrets store (no "format": {FORMAT!r})')
    if raw.get("version") != VERSION:
        raise SecretsError(
            f"{path}: unsupported version {raw.get('version')!r} (this Spacebot reads {VERSION})"
        )
    try:
        check = raw["check"]
        check_pair = (_nonce(check["nonce"]), _unb64(check["ciphertext"]))
        entries: list[tuple[str, Category, bytes, bytes]] = []
        seen: set[str] = set()
        for item in raw["entries"]:
            name, category = item["name"], item["category"]
            check_name(name)
            if category not in CATEGORIES:
                raise ValueError(f"entry {name!r}: unknown category {category!r}")
            if name in seen:
                raise ValueError(f"entry {name!r} appears twice")
            seen.add(name)
            entries.append(
                (name, cast(Category, category), _nonce(item["nonce"]), _unb64(item["ciphertext"]))
            )
    except (KeyError, TypeError, ValueError, SecretsError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SecretsError(f"{path}: malformed store: {detail}") from None
    return {"kdf": raw.get("kdf"), "check": check_pair, "entries": entries}


def _nonce(text: object) -> bytes:
    nonce = _unb64(text)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce of {len(nonce)} bytes (expected {NONCE_BYTES})")
    return nonce
