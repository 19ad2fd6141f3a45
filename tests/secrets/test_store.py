"""The encrypted store: round trips, every key source, and every way it must refuse to open."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from spacebot.secrets.store import (
    KEY_FILE,
    STORE_FILE,
    KeySource,
    SecretsError,
    SecretStore,
    create_key_file,
    find_master_key,
)

KEY = bytes(range(32))
OTHER = bytes(range(100, 132))


def hex_env(key: bytes = KEY) -> dict[str, str]:
    return {"SPACEBOT_MASTER_KEY": key.hex()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_with_categories(home: Path) -> None:
    store = SecretStore.open(home, hex_env())
    assert store.names() == [] and store.get("OPENAI") is None
    store.set("OPENAI", "sk-one")
    store.set("GITHUB_TOKEN", "ghp-two", "tool")
    store.set("OPENAI", "sk-three")  # replaces
    again = SecretStore.open(home, hex_env())
    assert again.get("OPENAI") == "sk-three"
    assert again.names() == [("GITHUB_TOKEN", "tool"), ("OPENAI", "system")]
    assert again.values() == {"GITHUB_TOKEN": "ghp-two", "OPENAI": "sk-three"}
    assert again.values("tool") == {"GITHUB_TOKEN": "ghp-two"}
    assert again.values("system") == {"OPENAI": "sk-three"}
    assert again.source == KeySource("env", "SPACEBOT_MASTER_KEY")
    assert again.remove("OPENAI") is True and again.remove("OPENAI") is False
    assert SecretStore.open(home, hex_env()).names() == [("GITHUB_TOKEN", "tool")]
    # No value is in the file in the clear, and no temporary file is left behind.
    text = (home / STORE_FILE).read_text()
    assert "ghp-two" not in text and "sk-three" not in text
    assert sorted(p.name for p in home.iterdir()) == [STORE_FILE]


def test_store_file_is_private_whatever_the_umask(home: Path) -> None:
    old = os.umask(0o022)
    try:
        SecretStore.open(home, hex_env()).set("A_KEY", "value-1")
        key_file = create_key_file(home / "other")
    finally:
        os.umask(old)
    assert mode(home / STORE_FILE) == 0o600
    assert mode(key_file) == 0o600 and len(key_file.read_bytes()) == 32
    (home / STORE_FILE).chmod(0o644)
    SecretStore.open(home, hex_env()).set("B_KEY", "value-2")
    assert mode(home / STORE_FILE) == 0o600


def test_wrong_key_names_the_source_tried(home: Path) -> None:
    SecretStore.open(home, hex_env()).set("OPENAI", "sk-one")
    path = home / STORE_FILE
    with pytest.raises(SecretsError) as caught:
        SecretStore.open(home, hex_env(OTHER))
    assert str(caught.value) == f"master key from SPACEBOT_MASTER_KEY does not open {path}"
    (home / KEY_FILE).write_bytes(OTHER)
    (home / KEY_FILE).chmod(0o600)
    with pytest.raises(
        SecretsError, match=f"master key from key file {home / KEY_FILE} does not open {path}"
    ):
        SecretStore.open(home, {})
    with pytest.raises(SecretsError, match=f"no master key to open {path}"):
        (home / KEY_FILE).unlink()
        SecretStore.open(home, {})


def test_wrong_key_is_refused_even_with_no_entries_left(home: Path) -> None:
    store = SecretStore.open(home, hex_env())
    store.set("ONLY", "value-1")
    store.remove("ONLY")
    with pytest.raises(SecretsError, match="does not open"):
        SecretStore.open(home, hex_env(OTHER))


def test_the_same_key_in_hex_or_base64_opens_the_store(home: Path) -> None:
    SecretStore.open(home, hex_env()).set("OPENAI", "sk-one")
    for text in (
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        KEY.hex().upper(),
    ):
        assert SecretStore.open(home, {"SPACEBOT_MASTER_KEY": text}).get("OPENAI") == "sk-one"


def test_sources_in_order_credential_env_file(home: Path, tmp_path: Path) -> None:
    assert find_master_key(home, {}) is None
    key_file = create_key_file(home)
    found = find_master_key(home, {})
    assert found == (key_file.read_bytes(), KeySource("file", str(key_file)))
    assert find_master_key(home, hex_env()) == (KEY, KeySource("env", "SPACEBOT_MASTER_KEY"))
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {**hex_env(), "CREDENTIALS_DIRECTORY": str(creds)}
    assert find_master_key(home, env) == (KEY, KeySource("env", "SPACEBOT_MASTER_KEY"))  # no file there
    (creds / "spacebot-master-key").write_text(OTHER.hex() + "\n")
    cred = str(creds / "spacebot-master-key")
    assert find_master_key(home, env) == (OTHER, KeySource("credential", cred))
    (creds / "spacebot-master-key").write_bytes(b"short")
    with pytest.raises(SecretsError, match=f"systemd credential {cred}: must hold 32 raw bytes"):
        find_master_key(home, env)


def test_key_file_readable_by_group_or_others_is_refused(home: Path) -> None:
    key_file = create_key_file(home)
    SecretStore.open(home, {}).set("OPENAI", "sk-one")
    for bits in (0o640, 0o604, 0o660):
        key_file.chmod(bits)
        with pytest.raises(SecretsError, match=rf"key file {key_file}: mode 0{bits:o} lets group or others"):
            find_master_key(home, {})
        with pytest.raises(SecretsError, match="chmod 600"):
            SecretStore.open(home, {})
    key_file.chmod(0o400)
    assert SecretStore.open(home, {}).get("OPENAI") == "sk-one"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_run_as_root_the_files_keep_the_owner_of_the_home(home: Path) -> None:
    nobody = 65534
    os.chown(home, nobody, nobody)
    key_file = create_key_file(home)
    SecretStore.open(home, {}).set("OPENAI", "sk-one")
    store = home / STORE_FILE
    assert (key_file.stat().st_uid, store.stat().st_uid) == (nobody, nobody)
    os.chown(store, 1234, 1234)  # an existing file keeps its own owner
    SecretStore.open(home, {}).set("OTHER", "value-2")
    assert (store.stat().st_uid, store.stat().st_gid) == (1234, 1234)


def test_create_key_file_never_replaces_a_key(home: Path) -> None:
    first = create_key_file(home).read_bytes()
    with pytest.raises(SecretsError, match="already exists"):
        create_key_file(home)
    assert (home / KEY_FILE).read_bytes() == first


def _doc(home: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((home / STORE_FILE).read_text())


def _save(home: Path, doc: dict) -> None:  # type: ignore[type-arg]
    (home / STORE_FILE).write_text(json.dumps(doc))


def test_tampered_ciphertext_opens_nothing(home: Path) -> None:
    store = SecretStore.open(home, hex_env())
    store.set("AAA", "value-a")
    store.set("BBB", "value-b")
    doc = _doc(home)
    raw = bytearray(base64.b64decode(doc["entries"][1]["ciphertext"]))
    raw[0] ^= 1
    doc["entries"][1]["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    _save(home, doc)
    with pytest.raises(SecretsError, match=r"entry 'BBB' does not decrypt .* the file was altered"):
        SecretStore.open(home, hex_env())


def test_entries_cannot_be_swapped_renamed_or_recategorised(home: Path) -> None:
    store = SecretStore.open(home, hex_env())
    store.set("AAA", "value-a")
    store.set("BBB", "value-b", "tool")
    original = _doc(home)
    swapped = json.loads(json.dumps(original))
    first, second = swapped["entries"]
    first["name"], second["name"] = second["name"], first["name"]
    first["category"], second["category"] = second["category"], first["category"]
    _save(home, swapped)
    with pytest.raises(SecretsError, match="does not decrypt"):
        SecretStore.open(home, hex_env())
    recategorised = json.loads(json.dumps(original))
    recategorised["entries"][1]["category"] = "system"
    _save(home, recategorised)
    with pytest.raises(SecretsError, match="entry 'BBB' does not decrypt"):
        SecretStore.open(home, hex_env())
    _save(home, original)
    assert SecretStore.open(home, hex_env()).values() == {"AAA": "value-a", "BBB": "value-b"}


def test_passphrase_round_trip_and_wrong_passphrase(home: Path) -> None:
    SecretStore.open(home, {}, passphrase="correct horse").set("OPENAI", "sk-one")
    doc = _doc(home)
    assert doc["kdf"]["name"] == "argon2id" and len(base64.b64decode(doc["kdf"]["salt"])) == 16
    store = SecretStore.open(home, {}, passphrase="correct horse")
    assert store.get("OPENAI") == "sk-one" and store.source is not None and store.source.kind == "passphrase"
    store.set("OTHER", "value-2")  # keeps the salt: the passphrase still opens it
    assert SecretStore.open(home, {}, passphrase="correct horse").get("OTHER") == "value-2"
    with pytest.raises(SecretsError, match=f"the passphrase does not open {home / STORE_FILE}"):
        SecretStore.open(home, {}, passphrase="wrong horse")
    # The same text in SPACEBOT_MASTER_KEY is the same passphrase (how the service opens it).
    env = {"SPACEBOT_MASTER_KEY": "correct horse"}
    assert SecretStore.open(home, env).get("OPENAI") == "sk-one"
    with pytest.raises(SecretsError, match=r"SPACEBOT_MASTER_KEY \(used as a passphrase\) does not open"):
        SecretStore.open(home, {"SPACEBOT_MASTER_KEY": "wrong horse"})
    with pytest.raises(SecretsError, match="written with a passphrase"):
        SecretStore.open(home, hex_env())


def test_passphrase_on_a_store_written_with_a_key(home: Path) -> None:
    SecretStore.open(home, hex_env()).set("OPENAI", "sk-one")
    with pytest.raises(SecretsError, match="written with a master key, not a passphrase"):
        SecretStore.open(home, {}, passphrase="anything")


def test_no_key_anywhere_reads_as_empty_but_refuses_to_write(home: Path) -> None:
    store = SecretStore.open(home, {})
    assert store.names() == [] and store.source is None
    with pytest.raises(
        SecretsError, match=rf"no master key to encrypt {home / STORE_FILE}.*SPACEBOT_MASTER_KEY"
    ):
        store.set("OPENAI", "sk-one")
    assert not (home / STORE_FILE).exists()


@pytest.mark.parametrize("name", ["", "1ABC", "has-dash", "sp ace", "A" * 65, "é"])
def test_bad_names_are_refused(home: Path, name: str) -> None:
    store = SecretStore.open(home, hex_env())
    with pytest.raises(SecretsError, match="invalid secret name"):
        store.set(name, "value-1")
    store.set("_" + "A" * 63, "value-1")  # the longest name
    assert store.names() == [("_" + "A" * 63, "system")]


def test_a_file_that_is_not_a_store_is_named(home: Path) -> None:
    (home / STORE_FILE).write_text("not json")
    with pytest.raises(SecretsError, match=f"{home / STORE_FILE}: not a secrets store"):
        SecretStore.open(home, hex_env())
    SecretStore.open(home / "x", hex_env()).set("A_KEY", "value-1")
    doc = _doc(home / "x")
    doc["entries"][0]["nonce"] = base64.b64encode(b"123").decode()
    _save(home, doc)
    with pytest.raises(SecretsError, match="malformed store: nonce of 3 bytes"):
        SecretStore.open(home, hex_env())
