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
    assert {i for i, _ in fused} == set(ids)  # six memories: every one is a candidate
    got, x = rerank.features(engine, query, lists, fused, len(ids))
    assert got == [i for i, _ in fused] and x.shape == (len(ids), len(FEATURES))
    f = {name: x[:, k] for k, name in enumerate(FEATURES)}
    assert list(f["fused"]) == [s for _, s in fused]
    row = {i: r for r, i in enumerate(got)}
    score, rank = dict(fused), {i: r for r, (i, _) in enumerate(fused, start=1)}
    for pos, i in enumerate(ids):
        said = CHAT[pos]
        r = row[i]
        assert f["question_mark"][r] == ("?" in said[1])
        assert f["log_chars"][r] == pytest.approx(np.log1p(len(said[1])))
        # The query names Ana: her turns are "by_named", Ben's "by_other".
        assert (f["by_named"][r], f["by_other"][r]) == ((1.0, 0.0) if said[0] == "Ana" else (0.0, 1.0))
        for name in ("bm25", "vector", "bm25_ctx"):
            ranked = [j for j, _ in lists[name]]
            if i in ranked:
                k = ranked.index(i) + 1
                assert f[f"{name}_rr"][r] == pytest.approx(1 / (rerank.RR_K + k))
                assert f[f"{name}_log_rank"][r] == pytest.approx(np.log(k))
                assert f[f"{name}_rel_score"][r] == pytest.approx(dict(lists[name])[i] / lists[name][0][1])
            else:
                assert f[f"{name}_rr"][r] == 0 and f[f"{name}_log_rank"][r] == pytest.approx(np.log(1000))
        tops = sum(1 for n in rerank.LISTS if i in [j for j, _ in lists.get(n, [])[:10]])
        assert f["lists_top10"][r] == tops
        # Sequence neighbours one and two steps away (the chat is one sequence).
        for step, name in ((1, "near1"), (2, "near2")):
            near = [ids[q] for q in (pos - step, pos + step) if 0 <= q < len(ids)]
            assert f[f"{name}_fused"][r] == max(score[j] for j in near)
            assert f[f"{name}_log_rank"][r] == pytest.approx(np.log(min(rank[j] for j in near)))


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
            # Several queries: each is reranked, then their rankings are fused.
            multi = eng.recall("pottery", queries=["clay bowl"], limit=6, touch=False)
            marks = ["?" in h.memory.content for h in multi]
            assert len(multi) == 6 and sorted(marks, reverse=questions_first) == marks


def test_off_keeps_the_fused_order(tmp_path: Path, embedder: Embedder) -> None:
    with MemoryEngine(tmp_path, MemoryConfig(rerank=False), embedder=embedder) as eng:
        _chat(eng)
        hits = eng.recall("pottery", limit=6, touch=False)
        qvec = eng.embedder.embed_one("pottery")
        _, fused = recall_mod.ranked(eng, "pottery", qvec, 200, 200, set(ALL_SOURCES), reranker=False)
        assert [(h.memory.id, h.score) for h in hits] == fused[:6]
        assert all("rerank" not in h.ranks for h in hits)


def test_candidates_beyond_the_depth_follow_in_fused_order(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "m.json"
    path.write_text(_only("question_mark", 5.0).to_json())
    with MemoryEngine(
        tmp_path / "d", MemoryConfig(rerank_model=str(path), rerank_depth=2), embedder=embedder
    ) as eng:
        _chat(eng)
        hits = eng.recall("pottery", limit=6, touch=False)
        qvec = eng.embedder.embed_one("pottery")
        _, fused = recall_mod.ranked(eng, "pottery", qvec, 200, 200, set(ALL_SOURCES), reranker=False)
        assert {h.memory.id for h in hits[:2]} == {i for i, _ in fused[:2]}
        assert [h.memory.id for h in hits[2:]] == [i for i, _ in fused[2:6]]
        assert all(h.score == 0.0 for h in hits[2:]) and all(h.score > 0 for h in hits[:2])


def test_the_engine_warns_when_the_fusion_differs_from_the_models(
    tmp_path: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    model = Reranker.load()
    assert model.fusion_differs(rerank.fusion_settings(MemoryConfig())) == []
    changed = MemoryConfig(weight_person=0.0, bm25_top_n=100)
    assert model.fusion_differs(rerank.fusion_settings(changed)) == ["depth", "weight_person"]
    with caplog.at_level("WARNING", logger="spacebot.memory.engine"):
        MemoryEngine(tmp_path, changed, embedder=embedder).close()
    assert "other fusion settings (depth, weight_person)" in caplog.text


def test_shapes_grow_with_the_ids() -> None:
    shapes = rerank.Shapes()
    shapes.add([3, 5000], [10, 1000], [True, False])
    chars, question = shapes.get([3, 5000, 4, 10**7])
    assert list(chars) == [10, rerank.MAX_CHARS, 0, 0] and list(question) == [1, 0, 0, 0]


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
            "1 coefficients for 33 features",
        ),
        (
            json.dumps(
                {"format": 1, "features": list(FEATURES), "coef": [0.0] * len(FEATURES), "intercept": 0}
            ).replace('"intercept": 0', '"intercept": NaN'),
            "'intercept' must be a finite number",
        ),
        (
            json.dumps(
                {"format": 1, "features": list(FEATURES), "coef": [True] * len(FEATURES), "intercept": 0}
            ),
            "'coef' must be a list of finite numbers",
        ),
        (json.dumps({"format": True}), "is not a reranker model of format 1"),
    ],
)
def test_a_bad_model_file_fails_the_start_naming_it(
    tmp_path: Path, embedder: Embedder, content: str, message: str
) -> None:
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(RerankerError, match=message) as err:
        MemoryEngine(tmp_path / "data", MemoryConfig(rerank_model=str(path)), embedder=embedder)
    assert str(path) in str(err.value)


def test_a_missing_model_file_fails_the_start(tmp_path: Path, embedder: Embedder) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(RerankerError, match="cannot read the reranker model") as err:
        MemoryEngine(tmp_path / "data", MemoryConfig(rerank_model=str(missing)), embedder=embedder)
    assert str(missing) in str(err.value)


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
