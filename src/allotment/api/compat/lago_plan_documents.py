"""A Lago plan's document: what we keep of a plan as Lago sent it, and how it is answered.

The native plan holds what we model (code = key, name, description, interval, the charges'
metrics as metered entitlements). Lago's pricing (amounts, trial, charge models and their
properties, thresholds, commitment) has no native home until billing is built: it is kept as
sent with the plan version, under the ids Lago would give it (`lago_id`, stable across
updates: a charge, threshold or commitment sent again with its id keeps it) and the time it was
first created. A plan made natively has no document and is answered with no price and one
standard charge per metered feature.
"""

from __future__ import annotations

from typing import Any

from allotment.api.compat.lago_http import at
from allotment.entitlements.models import Plan
from allotment.types import new_id, utcnow

INTERVALS = {"weekly": "week", "monthly": "month", "yearly": "year"}
LAGO_INTERVALS = {v: k for k, v in INTERVALS.items()}
CHARGE_MODELS = ("standard", "graduated", "graduated_percentage", "package", "percentage", "volume",
                 "dynamic", "custom")
NATIVE = frozenset({"code", "name", "description", "interval"})  # held by the native plan
# Instructions of a request, not the plan's, and what we answer: ids, times and the metric's
# code are ours (a caller echoing a plan it read must not replace them).
NOT_KEPT = frozenset({"cascade_updates", "id", "lago_id", "created_at", "updated_at", "lago_billable_metric_id",
                      "billable_metric_code", "taxes"})


def kept(sent: dict[str, Any]) -> dict[str, Any]:
    """What of a plan, charge, threshold or commitment sent is kept with the plan."""
    return {k: v for k, v in sent.items() if k not in NOT_KEPT}


def with_ids(sent: list[dict[str, Any]], before: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Items sent replace those before; one sent with the `id` of one before updates it (the
    fields it leaves out keep their values) and keeps its lago_id and created_at."""
    previous = {item["lago_id"]: item for item in before}
    out = []
    for item in sent:
        old = previous.get(item.get("id") or "")
        if old is None:
            out.append({"lago_id": new_id(prefix), "created_at": at(utcnow()), **kept(item)})
        else:
            out.append({**old, **{k: v for k, v in kept(item).items() if v is not None}})
    return out


def commitment(sent: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """A plan has one minimum commitment: sent again, it is updated and keeps its lago_id."""
    if before is None:
        return {"lago_id": new_id("mc"), "created_at": at(utcnow()), **kept(sent)}
    return {**before, **{k: v for k, v in kept(sent).items() if v is not None}}


def derived(plan: Plan, metric_ids: list[str]) -> dict[str, Any]:
    """The document of a plan made natively: no price, a standard charge per metered feature."""
    return {
        "lago_id": plan.id, "created_at": at(plan.created_at), "amount_cents": 0,
        "amount_currency": plan.currency,
        "charges": [{"lago_id": f"{plan.id}:{i}", "created_at": at(plan.created_at), "billable_metric_id": metric,
                     "charge_model": "standard"} for i, metric in enumerate(metric_ids)],
    }


def plan_out(plan: Plan, document: dict[str, Any], metric_codes: dict[str, str]) -> dict[str, Any]:
    sent = {k: v for k, v in document.items() if k not in ("charges", "usage_thresholds", "minimum_commitment")}
    commitment = document.get("minimum_commitment")
    return {
        "name": plan.name, "invoice_display_name": None, "code": plan.key,
        "interval": LAGO_INTERVALS[plan.billing_interval], "description": plan.description,
        "amount_cents": 0, "amount_currency": plan.currency, "trial_period": None, "pay_in_advance": False,
        "bill_charges_monthly": None, "bill_fixed_charges_monthly": None, "metadata": None,
        **sent,
        "charges": [_charge_out(c, metric_codes) for c in document.get("charges", [])],
        "fixed_charges": [], "taxes": [],
        "usage_thresholds": [{"threshold_display_name": None, "recurring": False, "updated_at": t["created_at"], **t}
                             for t in document.get("usage_thresholds", [])],
        "minimum_commitment": None if commitment is None else {
            "invoice_display_name": None, "taxes": [], "updated_at": commitment["created_at"], **commitment,
            "interval": LAGO_INTERVALS[plan.billing_interval],
        },
        "active_subscriptions_count": 0, "draft_invoices_count": 0,
    }


def _charge_out(charge: dict[str, Any], metric_codes: dict[str, str]) -> dict[str, Any]:
    sent = {k: v for k, v in charge.items() if k != "billable_metric_id"}
    return {
        "lago_billable_metric_id": charge["billable_metric_id"],
        "billable_metric_code": metric_codes.get(charge["billable_metric_id"]),
        "code": None, "invoice_display_name": None, "pay_in_advance": False, "prorated": False,
        "invoiceable": True, "regroup_paid_fees": None, "min_amount_cents": 0, "properties": {}, "filters": [],
        **sent, "taxes": [],
    }
