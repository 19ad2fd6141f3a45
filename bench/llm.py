"""Overhead of the LLM layer over the raw SDKs, streamed, against the fake server in its own process.

For each protocol (OpenAI Chat Completions, Anthropic Messages) it alternates raw-SDK streamed calls
and ``LLM.stream`` calls on the same fake server, and reports the added median / p99 wall time per
call and the added time to first token. ``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import anthropic
import openai

from spacebot.llm import LLM, LLMConfig, Request, TextDelta, UserMessage
from spacebot.testing import FakeLLMProcess

TEXT = " ".join(f"word{i}" for i in range(40))
PROMPT = "Explain why the build failed and compare the two fixes."  # not stepped down by the scorer


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def start_fake(tmp: Path) -> FakeLLMProcess:
    script = tmp / "bench_llm_script.json"
    script.write_text(json.dumps({"default": {"name": "bench", "text": TEXT}}))
    fake = FakeLLMProcess(script)
    await fake.start()
    return fake


async def raw_openai(client: openai.AsyncOpenAI) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = 0.0
    stream = await client.chat.completions.create(
        model="main",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=1024,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, first


async def raw_anthropic(client: anthropic.AsyncAnthropic) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = 0.0
    stream = await client.messages.create(
        model="big", messages=[{"role": "user", "content": PROMPT}], max_tokens=1024, stream=True
    )
    async for ev in stream:
        if not first and ev.type == "content_block_delta":
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, first


async def layered(llm: LLM, tier: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = 0.0
    async for ev in llm.stream(Request([UserMessage(PROMPT)], tier=tier), process="channel"):
        if not first and isinstance(ev, TextDelta):
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, first


async def run(n: int) -> dict[str, float]:
    tmp = Path("/tmp")
    fake = await start_fake(tmp)
    url = fake.url
    try:
        cfg = LLMConfig.from_dict(
            {
                "providers": {
                    "oa": {"kind": "openai_compatible", "base_url": url + "/v1", "api_key": "k"},
                    "an": {"kind": "anthropic", "base_url": url, "api_key": "k"},
                },
                "profiles": {"balanced": {"light": "oa/main", "standard": "oa/main", "strong": "an/big"}},
            }
        )
        llm = LLM(cfg, on_usage=lambda r: None)
        oa = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        an = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        rows: dict[str, dict[str, list[float]]] = {}
        for proto, raw, tier in (
            ("openai", lambda: raw_openai(oa), "standard"),
            ("anthropic", lambda: raw_anthropic(an), "strong"),
        ):
            res: dict[str, list[float]] = {"raw": [], "layer": [], "raw_ttft": [], "layer_ttft": []}
            for _ in range(20):  # warm-up: connections, imports, caches
                await raw()
                await layered(llm, tier)
            for i in range(n):
                order = (
                    (raw, lambda t=tier: layered(llm, t)) if i % 2 else (lambda t=tier: layered(llm, t), raw)
                )
                for kind, fn in zip(("raw", "layer") if i % 2 else ("layer", "raw"), order, strict=True):
                    total, first = await fn()
                    res[kind].append(total * 1000)
                    res[kind + "_ttft"].append(first * 1000)
            rows[proto] = res
        await llm.aclose()
        await oa.close()
        await an.close()
    finally:
        await fake.stop()
    table = {}
    for proto, r in rows.items():
        table[proto] = {
            "raw_p50": statistics.median(r["raw"]),
            "layer_p50": statistics.median(r["layer"]),
            "raw_p99": pct(r["raw"], 0.99),
            "layer_p99": pct(r["layer"], 0.99),
            "raw_ttft_p50": statistics.median(r["raw_ttft"]),
            "layer_ttft_p50": statistics.median(r["layer_ttft"]),
        }
    protos = list(table)
    out = {
        "overhead_p50_ms": max(table[p]["layer_p50"] - table[p]["raw_p50"] for p in protos),
        "overhead_p99_ms": max(table[p]["layer_p99"] - table[p]["raw_p99"] for p in protos),
        "ttft_added_p50_ms": max(table[p]["layer_ttft_p50"] - table[p]["raw_ttft_p50"] for p in protos),
    }
    return {**out, "calls_per_kind": n, "detail": table}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("-n", type=int, default=300, help="measured calls per kind and protocol")
    args = parser.parse_args()
    result = asyncio.run(run(args.n))
    if not args.json:
        print(
            f"{'protocol':<10} {'raw p50':>9} {'layer p50':>10} {'raw p99':>9} {'layer p99':>10} "
            f"{'raw ttft':>9} {'layer ttft':>11}   (ms, {args.n} calls each)"
        )
        for proto, t in result["detail"].items():  # type: ignore[attr-defined]
            print(
                f"{proto:<10} {t['raw_p50']:9.3f} {t['layer_p50']:10.3f} {t['raw_p99']:9.3f} "
                f"{t['layer_p99']:10.3f} {t['raw_ttft_p50']:9.3f} {t['layer_ttft_p50']:11.3f}"
            )
        for key in ("overhead_p50_ms", "overhead_p99_ms", "ttft_added_p50_ms"):
            print(f"{key:<20} {result[key]:.3f}")
    summary = {
        k: round(float(result[k]), 3) for k in ("overhead_p50_ms", "overhead_p99_ms", "ttft_added_p50_ms")
    }
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
