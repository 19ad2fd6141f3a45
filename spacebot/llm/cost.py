"""Cost estimate of a call from the configured price table, with built-in defaults per model family."""

from __future__ import annotations

from spacebot.ipc.messages import Usage
from spacebot.llm.config import LLMConfig

# (input, output, cached) US dollars per million tokens, matched by prefix of the model name
# (the part after ``provider/``). Longest prefix wins; unknown models cost 0 (local servers).
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "claude-opus": (15.0, 75.0, 1.5),
    "claude-sonnet": (3.0, 15.0, 0.3),
    "claude-haiku": (1.0, 5.0, 0.1),
    "gpt-4o-mini": (0.15, 0.6, 0.075),
    "gpt-4o": (2.5, 10.0, 1.25),
    "gpt-4.1-mini": (0.4, 1.6, 0.1),
    "gpt-4.1": (2.0, 8.0, 0.5),
    "o3": (2.0, 8.0, 0.5),
}


def prices_for(config: LLMConfig, model_id: str) -> tuple[float, float, float]:
    """(input, output, cached) per million tokens for ``model_id``: configured values over defaults."""
    name = model_id.partition("/")[2]
    default = (0.0, 0.0, 0.0)
    best = -1
    for prefix, prices in DEFAULT_PRICES.items():
        if name.startswith(prefix) and len(prefix) > best:
            default, best = prices, len(prefix)
    cfg = config.models.get(model_id)
    if cfg is None:
        return default
    return (
        default[0] if cfg.input_price is None else cfg.input_price,
        default[1] if cfg.output_price is None else cfg.output_price,
        default[2] if cfg.cached_price is None else cfg.cached_price,
    )


def estimate_cost(config: LLMConfig, model_id: str, usage: Usage) -> float:
    """Estimated US dollars of one call."""
    inp, out, cached = prices_for(config, model_id)
    return (usage.input_tokens * inp + usage.output_tokens * out + usage.cached_tokens * cached) / 1e6
