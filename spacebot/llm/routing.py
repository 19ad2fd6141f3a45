"""Model routing: process default → task override → complexity scorer → fallback chain.

``Router.decide`` returns a ``RouteDecision`` that records what each level decided and why, which is
what ``spacebot routing explain`` prints.
"""

from __future__ import annotations

import msgspec

from spacebot.llm.config import PROCESS_TYPES, TIERS, LLMConfig
from spacebot.llm.errors import LLMConfigError
from spacebot.llm.scorer import Score, score
from spacebot.llm.types import Request


class Step(msgspec.Struct, frozen=True):
    """One routing level's decision."""

    level: str
    """process, task, scorer or fallback."""
    tier: str
    """Tier after this level."""
    reason: str
    """Human-readable why."""


class RouteDecision(msgspec.Struct, frozen=True):
    """Where a request goes."""

    profile: str
    """Active profile."""
    tier: str
    """Final tier."""
    chain: list[str]
    """Models to try in order (first is the primary)."""
    steps: list[Step]
    """Per-level decisions."""
    score: float | None = None
    """Complexity score, when the scorer ran."""
    features: dict[str, float] = {}
    """Scorer feature contributions."""


class Router:
    """Pure routing over an ``LLMConfig``; no I/O."""

    def __init__(self, config: LLMConfig, profile: str | None = None) -> None:
        self.config = config
        self.profile = profile or config.profile
        if not config.profiles:
            raise LLMConfigError(
                "no model configured (nothing to route to): add [llm.providers.<name>] and "
                "[llm.profiles.<profile>] to config.toml, or set ANTHROPIC_API_KEY, OPENAI_API_KEY, "
                "or SPACEBOT_LLM_BASE_URL with SPACEBOT_LLM_MODEL"
            )
        if self.profile not in config.profiles:
            raise LLMConfigError(f"unknown profile {self.profile!r} (have {sorted(config.profiles)})")

    def model_for_tier(self, tier: str) -> str:
        """The profile's model for ``tier``, falling back to the nearest configured tier."""
        table = self.config.profiles[self.profile]
        if tier in table:
            return table[tier]
        idx = TIERS.index(tier)
        for other in sorted(TIERS, key=lambda t: abs(TIERS.index(t) - idx)):
            if other in table:
                return table[other]
        raise LLMConfigError(f"profile {self.profile!r} maps no tier")

    def chain_for(self, model: str) -> list[str]:
        """``model`` then its fallbacks, expanded transitively (a fallback's own fallbacks follow it)."""
        chain = [model]
        i = 0
        while i < len(chain):
            for other in self.config.fallbacks.get(chain[i], []):
                if other not in chain:
                    chain.append(other)
            i += 1
        return chain

    def decide(self, request: Request, *, process: str, task: str | None = None) -> RouteDecision:
        """Apply the four levels to ``request`` for a ``process`` type and optional ``task``."""
        cfg = self.config
        steps: list[Step] = []
        if request.model is not None:
            provider = request.model.partition("/")[0]
            if "/" not in request.model or provider not in cfg.providers:
                raise LLMConfigError(
                    f"invalid model {request.model!r} (expected 'provider/model' with a known provider)"
                )
            steps.append(Step("forced", "-", f"request names model {request.model!r}"))
            chain = self.chain_for(request.model)
            steps.append(Step("fallback", "-", _chain_reason(chain)))
            return RouteDecision(self.profile, "-", chain, steps)
        if process not in cfg.process_tiers:
            raise LLMConfigError(
                f"unknown process type {process!r} "
                f"(expected one of {sorted(set(PROCESS_TYPES) | set(cfg.process_tiers))})"
            )
        if request.tier is not None:
            if request.tier not in TIERS:
                raise LLMConfigError(f"unknown tier {request.tier!r} (expected one of {TIERS})")
            tier = request.tier
            steps.append(Step("forced", tier, f"request forces tier {tier!r}"))
            result_score = None
            feats: dict[str, float] = {}
        else:
            tier = cfg.process_tiers[process]
            steps.append(Step("process", tier, f"process {process!r} defaults to {tier!r}"))
            asked = task is not None and task in cfg.task_tiers
            if task is None:
                steps.append(Step("task", tier, "no task type"))
            elif asked:
                tier = cfg.task_tiers[task]
                steps.append(Step("task", tier, f"task {task!r} overrides to {tier!r}"))
            else:
                steps.append(Step("task", tier, f"no override for task {task!r}"))
            sc = score(request)
            result_score, feats = sc.value, sc.features
            tier, reason = _scorer_step(cfg, sc, tier, task if asked else None)
            steps.append(Step("scorer", tier, reason))
        model = self.model_for_tier(tier)
        chain = self.chain_for(model)
        nearest = "" if tier in cfg.profiles[self.profile] else " (no such tier in the profile: nearest)"
        steps.append(
            Step(
                "fallback",
                tier,
                f"profile {self.profile!r} tier {tier!r}{nearest} → {_chain_reason(chain)}",
            )
        )
        return RouteDecision(self.profile, tier, chain, steps, result_score, feats)


def _scorer_step(cfg: LLMConfig, sc: Score, tier: str, task: str | None) -> tuple[str, str]:
    """Level (c): the tier after the complexity scorer, and why.

    Only a process's default tier is stepped down: a task type that asks for a tier (``task``) gets
    it, because whoever named the task knows more about the work than a short prompt shows.
    """
    sc_cfg = cfg.scorer
    if not sc_cfg.enabled:
        return tier, "scorer disabled"
    if sc.value >= sc_cfg.simple_below:
        return tier, f"score {sc.value} >= {sc_cfg.simple_below}: not simple; kept"
    if sc.chars > sc_cfg.max_simple_chars:
        return tier, f"{sc.chars} chars > max_simple_chars {sc_cfg.max_simple_chars}: not simple; kept"
    simple = f"score {sc.value} < {sc_cfg.simple_below} and {sc.chars} chars <= {sc_cfg.max_simple_chars}"
    if task is not None:
        return tier, f"score {sc.value} is simple, but task {task!r} asks for {tier!r}: kept"
    if tier == TIERS[0]:
        return tier, f"{simple}: already the lowest tier"
    lower = TIERS[TIERS.index(tier) - 1]
    return lower, f"{simple}: a simple prompt steps {tier!r} down to {lower!r}"


def _chain_reason(chain: list[str]) -> str:
    if len(chain) == 1:
        return f"{chain[0]!r} (no fallbacks)"
    return f"{chain[0]!r} then " + ", ".join(repr(m) for m in chain[1:])
