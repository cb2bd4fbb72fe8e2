"""The stories' catalogue (SCENARIOS): what an operator would define without code."""

from __future__ import annotations

from typing import Any

from allotment.demo.api import Api

METERS: list[dict[str, Any]] = [
    {"key": "tokens", "name": "LLM tokens", "event_type": "prompt", "aggregation": "SUM",
     "value_property": "$.tokens", "group_by": {"model": "$.model", "direction": "$.direction"}},
    {"key": "api-calls", "name": "API calls", "event_type": "prompt", "aggregation": "COUNT"},
    {"key": "data-mb", "name": "Mobile data (MB)", "event_type": "data-session", "aggregation": "SUM",
     "value_property": "$.mb"},
    {"key": "voice-minutes", "name": "Voice minutes", "event_type": "call", "aggregation": "SUM",
     "value_property": "$.minutes"},
]

FEATURES: list[dict[str, Any]] = [
    {"key": "tokens", "name": "Tokens", "unit": "token", "meter": "tokens"},
    {"key": "api-calls", "name": "API calls", "unit": "call", "meter": "api-calls"},
    {"key": "seats", "name": "Named seats", "unit": "seat"},
    {"key": "sso", "name": "Single sign-on"},
    {"key": "limits", "name": "Workspace limits"},
    {"key": "kwh", "name": "Prepaid charging", "unit": "kWh"},
    {"key": "data", "name": "Mobile data", "unit": "MB", "meter": "data-mb"},
    {"key": "minutes", "name": "Voice minutes", "unit": "minute", "meter": "voice-minutes"},
    {"key": "pool", "name": "Pool entry", "unit": "entry"},
    {"key": "sauna", "name": "Sauna"},
    {"key": "classes", "name": "Classes"},
]


def _metered(feature: str, included: int, soft: int | None = None, hard: int | None = None,
             **extra: Any) -> dict[str, Any]:
    return {"feature": feature, "kind": "metered", "included": included, "soft_limit": soft,
            "hard_limit": hard, **extra}


def _boolean(feature: str) -> dict[str, Any]:
    return {"feature": feature, "kind": "boolean"}


# Plans in the order they are published (a plan's next tier must exist first).
PLANS: list[dict[str, Any]] = [
    {"key": "ai-pro", "name": "AI Pro", "entitlements": [
        _metered("tokens", 10_000_000, 10_000_000, 15_000_000), _metered("api-calls", 0), _boolean("sso")]},
    {"key": "ai-starter", "name": "AI Starter", "next_tier": "ai-pro", "entitlements": [
        _metered("tokens", 1_000_000, 1_000_000, 1_500_000), _metered("api-calls", 0)]},
    {"key": "team-100", "name": "Team, 100 seats", "entitlements": [
        {"feature": "seats", "kind": "seats", "included": 100, "soft_limit": 100, "hard_limit": 120,
         "lease_ttl_seconds": 900},
        _boolean("sso"), {"feature": "limits", "kind": "static", "config": {"max_projects": 50}}]},
    {"key": "prepaid-kwh", "name": "Prepaid charging", "entitlements": [
        _metered("kwh", 0, 0, 0, usage_period="NONE")]},
    {"key": "bundle-10gb", "name": "10 GB + 300 minutes", "entitlements": [
        _metered("data", 10_240, 10_240, 10_240, included_rollover=2_048), _metered("minutes", 300, 300, 300)]},
    {"key": "gym-all-access", "name": "All access", "entitlements": [
        _boolean("pool"), _boolean("sauna"), _boolean("classes")]},
    {"key": "gym-limited", "name": "Limited", "entitlements": [_metered("pool", 1, usage_period="WEEK")]},
]


async def define(api: Api) -> None:
    for meter in METERS:
        await api.post("/v1/meters", meter)
    for feature in FEATURES:
        await api.post("/v1/features", feature)
    for plan in PLANS:
        await api.post("/v1/plans", plan)
        await api.post(f"/v1/plans/{plan['key']}/publish")
