"""LoCoMo retrieval benchmark for the memory engine (Recall@k over dialog turns, as the paper scores it).

Every dialog turn of a conversation becomes a memory (speaker and session date in its metadata,
consecutive turns of a session chained as a sequence) in a fresh engine; every question is then a
recall, and Recall@k is the fraction of the question's evidence turns found in the top k, averaged
over all questions (a question without evidence counts as 1).

Usage: python bench/locomo.py [--data PATH] [--limit-conversations N] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine
from spacebot.memory.embedder import Embedder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
KS = (5, 10, 25, 50)
CATEGORIES = {4: "single-hop", 1: "multi-hop", 2: "temporal", 3: "open-domain", 5: "adversarial"}
METHODS: dict[str, tuple[str, ...]] = {
    "hybrid": ("vector", "bm25", "vector_ctx", "bm25_ctx", "graph"),
    "vector": ("vector",),
    "bm25": ("bm25",),
}
DIAGNOSTIC: dict[str, tuple[str, ...]] = {
    "bm25_ctx": ("bm25_ctx",),
    "vector_ctx": ("vector_ctx",),
    "no_graph": ("vector", "bm25", "vector_ctx", "bm25_ctx"),
    "ctx_only": ("vector_ctx", "bm25_ctx"),
}


def evidence_ids(raw: list[str], known: set[str]) -> list[str]:
    """Normalise LoCoMo's evidence references and drop those that name no real turn."""
    out: list[str] = []
    for ref in raw:
        for part in re.split(r"[;\s]+", ref):
            part = part.strip()
            if not part:
                continue
            part = re.sub(r"^D:(\d+):", r"D\1:", part)
            m = re.fullmatch(r"D(\d+):(\d+)", part)
            if m:
                part = f"D{int(m.group(1))}:{int(m.group(2))}"
            if part in known and part not in out:
                out.append(part)
    return out


def turns_of(sample: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Sessions in order, each a list of turns with the session date attached."""
    conv = sample["conversation"]
    numbers = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
    sessions = []
    for n in numbers:
        date = conv.get(f"session_{n}_date_time", "")
        session = []
        for turn in conv[f"session_{n}"]:
            text = turn.get("text", "")
            if turn.get("blip_caption"):
                text = f"{text} [shares an image: {turn['blip_caption']}]"
            session.append({"dia_id": turn["dia_id"], "speaker": turn["speaker"], "text": text, "date": date})
        sessions.append(session)
    return sessions


def run(
    data: Path,
    limit_conversations: int | None,
    log: Any,
    config: MemoryConfig,
    methods: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    samples = json.loads(data.read_text())[:limit_conversations]
    embedder = Embedder(threads=config.embed_threads)
    # per method: list of (category, {k: recall})
    results: dict[str, list[tuple[int, dict[int, float]]]] = {m: [] for m in methods}
    t_ingest = t_query = 0.0
    turns_total = 0
    for sample in samples:
        with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
            engine = MemoryEngine(Path(tmp), config, embedder=embedder)
            dia_of: dict[int, str] = {}
            t0 = time.perf_counter()
            for session in turns_of(sample):
                drafts = [
                    MemoryDraft(
                        content=t["text"],
                        type="event",
                        source="locomo",
                        channel=sample["sample_id"],
                        metadata={"speaker": t["speaker"], "date": t["date"], "dia_id": t["dia_id"]},
                    )
                    for t in session
                ]
                for draft, memory in zip(drafts, engine.save_many(drafts, chain=True), strict=True):
                    dia_of[memory.id] = draft.metadata["dia_id"]
            t_ingest += time.perf_counter() - t0
            turns_total += len(dia_of)
            known = set(dia_of.values())
            t0 = time.perf_counter()
            for qa in sample["qa"]:
                gold = evidence_ids(qa.get("evidence", []), known)
                for method, sources in methods.items():
                    hits = engine.recall(qa["question"], limit=max(KS), sources=sources, touch=False)
                    got = [dia_of[h.memory.id] for h in hits]
                    recall = {
                        k: (sum(1 for g in gold if g in got[:k]) / len(gold)) if gold else 1.0 for k in KS
                    }
                    results[method].append((int(qa["category"]), recall))
            t_query += time.perf_counter() - t0
            engine.close()
            log(f"{sample['sample_id']}: {len(dia_of)} turns, {len(sample['qa'])} questions")
    out: dict[str, Any] = {}
    for method, rows in results.items():
        entry: dict[str, Any] = {f"r@{k}": round(100 * sum(r[k] for _, r in rows) / len(rows), 1) for k in KS}
        per: dict[str, Any] = {}
        for cat, name in CATEGORIES.items():
            sub = [r for c, r in rows if c == cat]
            if sub:
                per[name] = {f"r@{k}": round(100 * sum(r[k] for r in sub) / len(sub), 1) for k in KS}
                per[name]["n"] = len(sub)
        entry["per_category"] = per
        out[method] = entry
    out["questions"] = len(results["hybrid"])
    out["turns"] = turns_total
    out["ingest_turns_per_s"] = round(turns_total / t_ingest, 1) if t_ingest else 0.0
    out["query_ms_per_recall"] = round(1000 * t_query / max(1, len(results["hybrid"]) * len(methods)), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit-conversations", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a MemoryConfig key"
    )
    parser.add_argument(
        "--diagnostic", action="store_true", help="also score single context lists and ablations"
    )
    args = parser.parse_args(argv)
    methods = {**METHODS, **(DIAGNOSTIC if args.diagnostic else {})}
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = msgspec.convert(overrides, MemoryConfig)
    if not args.data.is_file():
        print(f"LoCoMo data not found at {str(args.data)!r} (expected locomo10.json there)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = run(args.data, args.limit_conversations, log, config, methods)
    print(f"LoCoMo Recall@k, {out['questions']} questions, {out['turns']} turns (dialog-turn units)")
    print(f"{'method':<22}" + "".join(f"{'R@' + str(k):>8}" for k in KS))
    for method in methods:
        print(f"{method:<22}" + "".join(f"{out[method][f'r@{k}']:>8.1f}" for k in KS))
        for name, row in out[method]["per_category"].items():
            print(
                f"  {name + ' (' + str(row['n']) + ')':<20}" + "".join(f"{row[f'r@{k}']:>8.1f}" for k in KS)
            )
    print(f"{'DRAGON (published)':<22}" + "".join(f"{v:>8.1f}" for v in (56.7, 66.2, 76.7, 82.7)))
    print(f"ingest {out['ingest_turns_per_s']} turns/s, {out['query_ms_per_recall']} ms per recall")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
