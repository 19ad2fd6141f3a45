"""The learned reranking stage: its features on a real engine, its model files, its fitting, and
that hybrid recall really orders by it. Real engine, real model, real indexes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, MemoryType, rerank
from spacebot.memory import recall as recall_mod
from spacebot.memory.embedder import Embedder
from spacebot.memory.rerank import FEATURES, Reranker, RerankerError
from spacebot.memory.types import ALL_SOURCES

CHAT = [
    ("Ana", "Did you ever try pottery?"),
    ("Ben", "Yes, I made a pottery bowl last spring and it cracked in the kiln"),
    ("Ana", "I signed up for a pottery class on Thursdays"),
    ("Ben", "Nice, what will you make?"),
    ("Ana", "A set of mugs for my sister, glazed blue"),
    ("Ben", "My weekend was all about climbing"),
]


def _chat(engine: MemoryEngine) -> list[int]:
    drafts = [
        MemoryDraft(content=text, type=MemoryType.EVENT, metadata={"speaker": who}, channel="c")
        for who, text in CHAT
    ]
    return [m.id for m in engine.save_many(drafts, chain=True)]


def _only(feature: str, weight: float) -> Reranker:
    coef = [0.0] * len(FEATURES)
    coef[FEATURES.index(feature)] = weight
    return Reranker(coef, 0.0)


def test_the_shipped_model_loads_and_names_where_it_was_fitted() -> None:
    model = Reranker.load()
    assert len(model.coef) == len(FEATURES) and np.isfinite(model.coef).all()
    assert "conversations 1-5" in model.meta["fitted_on"]


def test_features_describe_each_candidate(engine: MemoryEngine) -> None:
    ids = _chat(engine)
    query = "what is Ana making in the pottery class"
    qvec = engine.embedder.embed_one(query)
    lists, fused = recall_mod.ranked(engine, query, qvec, 200, 200, set(ALL_SOURCES), reranker=False)
    got, x = rerank.features(engine, query, lists, fused, 4)
    assert got == [i for i, _ in fused[:4]] and x.shape == (4, len(FEATURES))
    f = {name: x[:, k] for k, name in enumerate(FEATURES)}
    assert list(f["fused"]) == [s for _, s in fused[:4]]
    row = {i: r for r, i in enumerate(got)}
    for i in got:
        said = CHAT[ids.index(i)]
        assert f["question_mark"][row[i]] == ("?" in said[1])
        assert f["log_chars"][row[i]] == pytest.approx(np.log1p(len(said[1])))
        # The query names Ana: her turns are "by_named", Ben's "by_other".
        assert (f["by_named"][row[i]], f["by_other"][row[i]]) == (
            (1.0, 0.0) if said[0] == "Ana" else (0.0, 1.0)
        )
        bm = [j for j, _ in lists["bm25"]]
        if i in bm:
            assert f["bm25_rr"][row[i]] == pytest.approx(1 / (rerank.RR_K + bm.index(i) + 1))
        else:
            assert f["bm25_rr"][row[i]] == 0 and f["bm25_log_rank"][row[i]] == pytest.approx(np.log(1000))
    # The first and last memory of the sequence have one neighbour at each distance; the rest two.
    first = ids[0]
    if first in row:
        assert f["near1_fused"][row[first]] == dict(fused).get(ids[1], 0.0)


def test_hybrid_recall_orders_by_the_model(tmp_path: Path, embedder: Embedder) -> None:
    """A model that only punishes question marks puts the questions last; one that only rewards
    them puts them first: the order really comes from the model file."""
    for weight, questions_first in ((-5.0, False), (5.0, True)):
        path = tmp_path / f"m{weight}.json"
        path.write_text(_only("question_mark", weight).to_json())
        with MemoryEngine(
            tmp_path / f"d{weight}", MemoryConfig(rerank_model=str(path)), embedder=embedder
        ) as eng:
            _chat(eng)
            hits = eng.recall("pottery", limit=6, touch=False)
            marks = ["?" in h.memory.content for h in hits]
            assert sorted(marks, reverse=questions_first) == marks and any(marks) and not all(marks)
            assert all("rerank" in h.ranks for h in hits)
            assert hits[0].score > hits[-1].score
            # A recall restricted to some sources keeps the fused order: no rerank.
            some = eng.recall("pottery", limit=6, touch=False, sources=["vector", "bm25"])
            assert all("rerank" not in h.ranks for h in some)
            # Several queries: each is reranked, then fused.
            multi = eng.recall("pottery", queries=["clay bowl"], limit=6, touch=False)
            assert multi and all("rerank" in h.ranks for h in multi)


def test_off_keeps_the_fused_order(tmp_path: Path, embedder: Embedder) -> None:
    with MemoryEngine(tmp_path, MemoryConfig(rerank=False), embedder=embedder) as eng:
        _chat(eng)
        hits = eng.recall("pottery", limit=6, touch=False)
        assert hits and all("rerank" not in h.ranks for h in hits)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read the reranker model"),
        ('{"format": 9}', "is not a reranker model of format 1"),
        ('{"format": 1, "features": ["fused"], "coef": [1], "intercept": 0}', "fitted on other features"),
        (
            json.dumps({"format": 1, "features": list(FEATURES), "coef": "x", "intercept": 0}),
            "'coef' must be",
        ),
        (
            json.dumps(
                {"format": 1, "features": list(FEATURES), "coef": [0.0] * len(FEATURES), "intercept": "0"}
            ),
            "'intercept' must be",
        ),
        (
            json.dumps({"format": 1, "features": list(FEATURES), "coef": [1.0], "intercept": 0}),
            "coefficients",
        ),
    ],
)
def test_a_bad_model_file_fails_the_start_naming_it(
    tmp_path: Path, embedder: Embedder, content: str, message: str
) -> None:
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(RerankerError, match=message) as err:
        MemoryEngine(tmp_path / "data", MemoryConfig(rerank_model=str(path)), embedder=embedder)
    if "coefficients" not in message:
        assert str(path) in str(err.value)
    with pytest.raises(RerankerError, match="cannot read"):
        Reranker.load(tmp_path / "missing.json")


def test_fit_learns_which_feature_marks_the_evidence(tmp_path: Path) -> None:
    """Every feature is noise but ``by_named``, which marks the evidence: the fitted model leans on it,
    ranks the evidence first, and survives a round trip through its file."""
    rng = np.random.default_rng(7)
    groups = []
    for _ in range(40):
        x = rng.normal(size=(30, len(FEATURES)))
        y = np.zeros(30)
        y[:3] = 1
        x[:, FEATURES.index("by_named")] = y + rng.normal(scale=0.1, size=30)
        groups.append((x, y))
    model = rerank.fit(groups, 1.0, {"note": "synthetic"})
    named = FEATURES.index("by_named")
    assert np.argmax(np.abs(model.coef)) == named and model.coef[named] > 0
    for x, _ in groups[:5]:
        top = np.argsort(-model.logits(x))[:3]
        assert set(top) == {0, 1, 2}
    (tmp_path / "m.json").write_text(model.to_json())
    again = Reranker.load(tmp_path / "m.json")
    assert np.allclose(again.coef, model.coef, atol=1e-7) and again.meta["note"] == "synthetic"
    with pytest.raises(RerankerError, match="both evidence and non-evidence"):
        rerank.fit([(np.zeros((3, len(FEATURES))), np.zeros(3))], 1.0)


def test_lengths_and_question_marks_are_known_after_a_restart(tmp_path: Path, embedder: Embedder) -> None:
    """The shape features are kept in memory: filled at save, rebuilt from DuckDB at start."""
    with MemoryEngine(tmp_path, MemoryConfig(), embedder=embedder) as eng:
        ids = _chat(eng)
        saved = eng.shapes.get(ids)
        eng.forget(ids[:1])
    with MemoryEngine(tmp_path, MemoryConfig(), embedder=embedder) as eng:
        chars, question = eng.shapes.get(ids[1:])
        assert list(chars) == list(saved[0][1:]) == [min(len(t), rerank.MAX_CHARS) for _, t in CHAT[1:]]
        assert list(question) == list(saved[1][1:]) == [int("?" in t) for _, t in CHAT[1:]]
        # Unknown ids (forgotten before the start, or never saved) read as zero.
        assert [int(v) for v in eng.shapes.get([ids[0], 10**6])[0]] == [0, 0]
