"""Reads: policies for the admin and the API, and the in-memory table the gateway uses."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import QuerySet

from apps.guardrails.engine import CompiledPolicy, PolicySpec, compile_policies
from apps.guardrails.models import Policy
from apps.guardrails.validation import PolicyError

logger = logging.getLogger("gateway.guardrails")


def policy_list(*, tenant_ids: list[int] | None) -> QuerySet[Policy]:
    """Policies of the given tenants; ``None`` means every tenant (superusers)."""
    qs = Policy.objects.select_related("tenant", "key")
    return qs if tenant_ids is None else qs.filter(tenant_id__in=tenant_ids)


@dataclass
class PolicyTable:
    """Every enabled policy, compiled, keyed by scope: no database on the request path.

    ``keys`` maps (tenant id, key id) to the key's own policy, or to ``None`` when the
    key's policies have no rules: either way the tenant's policies do not apply to it.
    """

    tenants: dict[int, CompiledPolicy] = field(default_factory=dict)
    keys: dict[tuple[int, int], CompiledPolicy | None] = field(default_factory=dict)

    def policy_for(self, tenant_id: int, key_id: int | None) -> CompiledPolicy | None:
        """The policy for a request, or ``None``: nothing to check."""
        if key_id is not None:
            scope = (tenant_id, key_id)
            if scope in self.keys:
                return self.keys[scope]
        return self.tenants.get(tenant_id)


def _compiled(specs: list[PolicySpec]) -> CompiledPolicy | None:
    policy = compile_policies(specs)
    return None if policy.is_empty else policy


def policies_load() -> PolicyTable:
    """Load and compile all enabled policies of active tenants (call on config change)."""
    by_tenant: dict[int, list[PolicySpec]] = defaultdict(list)
    by_key: dict[tuple[int, int], list[PolicySpec]] = defaultdict(list)
    rows = Policy.objects.filter(enabled=True, tenant__is_active=True).order_by("pk")
    for policy in rows:
        try:
            spec = policy.spec()
        except PolicyError as exc:
            # Validated on save; only a hand-edited row gets here. Its scope keeps
            # its other policies.
            logger.error(
                "content policy skipped",
                extra={"policy": policy.pk, "tenant_id": policy.tenant_id, "error": exc.message},
            )
            continue
        if policy.key_id is None:
            by_tenant[policy.tenant_id].append(spec)
        else:
            by_key[(policy.tenant_id, policy.key_id)].append(spec)
    table = PolicyTable()
    for tenant_id, specs in by_tenant.items():
        compiled = _compiled(specs)
        if compiled is not None:
            table.tenants[tenant_id] = compiled
    for scope, specs in by_key.items():
        table.keys[scope] = _compiled(specs)
    return table
