"""Writes to content policies. Every change reaches the gateway processes through the
configuration token (they reload and recompile the policy table)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.core.services import config_changed
from apps.guardrails.engine import Action
from apps.guardrails.models import Policy
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant

POLICY_FIELDS = frozenset(
    {
        "name",
        "description",
        "key",
        "enabled",
        "applies_to_input",
        "applies_to_output",
        "blocked_terms",
        "blocked_terms_action",
        "regex_rules",
        "detectors",
    }
)


def _save(policy: Policy) -> Policy:
    policy.full_clean()  # normalises terms, rules and detectors; checks the key's tenant
    policy.save()
    config_changed()
    return policy


@transaction.atomic
def policy_create(
    *,
    tenant: Tenant,
    name: str,
    key: ApiKey | None = None,
    description: str = "",
    enabled: bool = True,
    applies_to_input: bool = True,
    applies_to_output: bool = True,
    blocked_terms: list[str] | None = None,
    blocked_terms_action: str = Action.BLOCK,
    regex_rules: list[dict[str, str]] | None = None,
    detectors: dict[str, str] | None = None,
) -> Policy:
    """Create a policy for a tenant, or for one of its keys (``key``).

    Raises ``ValidationError`` naming the field for an invalid term, regex (it must
    compile, match something and not risk catastrophic backtracking), detector or action.
    """
    policy = Policy(
        tenant=tenant,
        key=key,
        name=name,
        description=description,
        enabled=enabled,
        applies_to_input=applies_to_input,
        applies_to_output=applies_to_output,
        blocked_terms=list(blocked_terms or []),
        blocked_terms_action=str(blocked_terms_action),
        regex_rules=list(regex_rules or []),
        detectors=dict(detectors or {}),
    )
    return _save(policy)


@transaction.atomic
def policy_update(*, policy: Policy, **changes: Any) -> Policy:
    """Change the given fields (any of :data:`POLICY_FIELDS`); the tenant stays."""
    unknown = set(changes) - POLICY_FIELDS
    if unknown:
        raise TypeError(f"policy_update() got unknown field(s): {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        setattr(policy, name, value)
    return _save(policy)


@transaction.atomic
def policy_delete(*, policy: Policy) -> None:
    policy.delete()
    config_changed()
