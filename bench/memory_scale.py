"""Memory engine at scale: hybrid recall latency (query embedding included), save throughput, RSS.

Texts are varied sentence-like memories generated from a vocabulary (never random vectors: HNSW
behaves very differently on those). One engine grows through the scales. At each scale:

* the store is filled up to ``scale - live`` memories with ``save_many`` in batches of 1,000. To keep
  the default run within minutes the fill reuses vectors that this same model computed for these
  exact texts on an earlier run (cached under ``$XDG_CACHE_HOME/spacebot-bench``; the first run
  computes them, ~8 minutes for 100k on 2 cores). Everything else (DuckDB, HNSW, tantivy, linking)
  runs for real;
* the last ``live`` memories are saved with live embedding, in batches of 100: ``saves_per_s``;
* ``queries`` hybrid recalls of fresh sentences are timed end to end: ``recall_p50_ms``/``p99``,
  and each query again without the reranker (``no_rerank_p50_ms``/``p99``) and without the person
  lists (``no_person_p50_ms``/``p99``), the three in turn (each goes first for a third of the
  queries).
  Memories that name a person are saved as about that person (``people`` metadata, what
  ``memory_save``'s ``about`` writes), 20 people in all, so most queries name someone (whose
  memories are 4 % of the store) and get the person lists.

Usage: python bench/memory_scale.py [--scales 10000,100000] [--queries 300] [--live 1000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine
from spacebot.memory.embedder import MODEL_SHA256, Embedder

NAMES = (
    "Ana Ben Chloe Dev Elif Farid Greta Hiro Ines Jonas "
    "Kemal Lena Mateo Nadia Omar Priya Quinn Rosa Sven Tara"
)
TEAMS = "billing search mobile infra data security design support growth platform payments onboarding"
VERBS = (
    "moved|fixed|reviewed|scheduled|postponed|documented|migrated|benchmarked|rewrote|deployed|"
    "cancelled|approved|tested|refactored|monitored|paused|shipped|planned|estimated|audited"
)
NOUNS = (
    "database backup|release checklist|login page|search index|build pipeline|invoice service|"
    "onboarding flow|status dashboard|alerting rules|load balancer|mobile app|API gateway|"
    "cache layer|billing report|design system|support queue|access policy|data export|"
    "feature flag|on-call rota|staging cluster|error budget|customer survey|pricing page"
)
PLACES = "Lisbon|Berlin|Nairobi|Osaka|Toronto|the Helsinki office|the staging cluster|the main repo|the wiki"
TIMES = (
    "on Monday|last Tuesday|before the holidays|next sprint|in March|after the outage|every night|by Friday"
)
REASONS = (
    "because latency doubled|to cut costs|after a customer complaint|for the audit|to unblock the launch|"
    "since the vendor changed prices|as agreed in the retro|to reduce flaky tests|for GDPR compliance"
)
TEMPLATES = [
    "{name} {verb} the {noun} in {place} {time} {reason}.",
    "The {team} team {verb} the {noun} {time}.",
    "{name} says the {noun} should be {verb} {reason}.",
    "We {verb} the {noun} for the {team} team {time}; {name} owns the follow-up.",
    "{name} prefers that the {team} team keeps the {noun} in {place}.",
    "Reminder: {name} {verb} the {noun} {time} {reason}.",
]


def generate(n: int, seed: int) -> list[tuple[str, str | None]]:
    """``n`` varied sentences, each with the person it names (deterministic for a seed)."""
    rnd = random.Random(seed)
    pools = {
        "name": NAMES.split(),
        "team": TEAMS.split(),
        "verb": VERBS.split("|"),
        "noun": NOUNS.split("|"),
        "place": PLACES.split("|"),
        "time": TIMES.split("|"),
        "reason": REASONS.split("|"),
    }
    out: list[tuple[str, str | None]] = []
    for _ in range(n):
        template = rnd.choice(TEMPLATES)
        fields = {k: rnd.choice(v) for k, v in pools.items()}
        out.append((template.format(**fields), fields["name"] if "{name}" in template else None))
    return out


def draft(item: tuple[str, str | None]) -> MemoryDraft:
    """A memory about the person its text names (what ``memory_save``'s ``about`` records)."""
    text, name = item
    return MemoryDraft(content=text, metadata={"people": [name]} if name else {})


def cached_vectors(embedder: Embedder, texts: list[str], log: Any) -> np.ndarray:
    """This model's vectors for ``texts``, computed once and cached on disk."""
    key = hashlib.sha256((MODEL_SHA256 + "\n".join(texts)).encode()).hexdigest()[:20]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spacebot-bench"
    path = root / f"scale-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path)
    log(f"embedding {len(texts)} fill texts once (cached at {path})")
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(texts), 5_000):
        out[start : start + 5_000] = embedder.embed(texts[start : start + 5_000])
        done = min(start + 5_000, len(texts))
        log(f"  embedded {done}/{len(texts)} ({done / (time.perf_counter() - t0):.0f}/s)")
    root.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def run(scales: list[int], queries: int, live: int, log: Any) -> dict[str, Any]:
    embedder = Embedder(threads=2)
    fill_total = max(scales) - live * len(scales)
    fill_texts = generate(fill_total, seed=1)
    fill_vecs = cached_vectors(embedder, [t for t, _ in fill_texts], log)
    live_texts = generate(live * len(scales), seed=2)
    query_texts = generate(queries + 20, seed=3)
    out: dict[str, Any] = {}
    proc = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="memscale-") as tmp:
        engine = MemoryEngine(Path(tmp), MemoryConfig(), embedder=embedder)
        filled = 0
        for n, scale in enumerate(sorted(scales)):
            t0 = time.perf_counter()
            target = scale - live * (n + 1)
            while filled < target:
                end = min(filled + 1_000, target)
                drafts = [draft(t) for t in fill_texts[filled:end]]
                engine.save_many(drafts, vectors=fill_vecs[filled:end])
                filled = end
            fill_s = time.perf_counter() - t0
            if n == len(scales) - 1:
                del fill_vecs, fill_texts  # the bench's own cache is not the engine's memory
                gc.collect()
            t0 = time.perf_counter()
            batch = live_texts[n * live : (n + 1) * live]
            for start in range(0, live, 100):
                engine.save_many([draft(t) for t in batch[start : start + 100]])
            saves_per_s = live / (time.perf_counter() - t0)
            engine.flush()
            for q, _ in query_texts[:20]:
                engine.recall(q, limit=10)
            # Side by side, each query in turn: the defaults (person lists on, most queries name
            # someone; reranker on), without the reranker, and without the person lists.
            on = engine.config
            variants = {
                "recall": on,
                "no_rerank": msgspec.structs.replace(on, rerank=False),
                "no_person": msgspec.structs.replace(on, weight_person=0.0),
            }
            lat: dict[str, list[float]] = {v: [] for v in variants}
            names = list(variants)
            for k, (q, _) in enumerate(query_texts[20:]):
                for name in names[k % 3 :] + names[: k % 3]:  # each variant goes first in turn
                    engine.config = variants[name]
                    t = time.perf_counter()
                    engine.recall(q, limit=10)
                    lat[name].append((time.perf_counter() - t) * 1000)
            engine.config = on
            out[str(scale)] = {
                "memories": engine.count(),
                **{
                    f"{name}_{p}_ms": round(float(np.percentile(lat[name], int(p[1:]))), 2)
                    for name in variants
                    for p in ("p50", "p99")
                },
                "queries_naming_someone": sum(1 for _, name in query_texts[20:] if name),
                "saves_per_s": round(saves_per_s, 1),
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "fill_s": round(fill_s, 1),
            }
            log(f"{scale}: {out[str(scale)]}")
        engine.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scales", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--live", type=int, default=1_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    scales = sorted(int(s) for s in args.scales.split(","))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = run(scales, args.queries, args.live, log)
    print(f"memory engine at scale ({os.cpu_count()} cores), hybrid recall of 10, query embedding included")
    head = ("memories", "p50 ms", "p99 ms", "p50 -rr", "p99 -rr", "p50 -pp", "p99 -pp", "saves/s", "RSS MB")
    print("".join(f"{h:>10}" for h in head) + "   (-rr: without the reranker; -pp: without the person lists)")
    for scale, row in out.items():
        cells = "".join(
            f"{row[f'{v}_{p}_ms']:>10.2f}"
            for v in ("recall", "no_rerank", "no_person")
            for p in ("p50", "p99")
        )
        print(f"{scale:>10}{cells}{row['saves_per_s']:>10.1f}{row['rss_mb']:>10.1f}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
