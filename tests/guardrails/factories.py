from __future__ import annotations

import itertools

from apps.guardrails.engine import CompiledPolicy, compile_policies
from apps.guardrails.models import Policy
from apps.guardrails.services import policy_create
from apps.guardrails.validation import policy_spec
from apps.tenants.models import Tenant

_names = itertools.count()


def make_policy(tenant: Tenant, **fields) -> Policy:
    """Policies go through the service, as the admin and the API create them."""
    fields.setdefault("name", f"policy-{next(_names)}")
    return policy_create(tenant=tenant, **fields)


def engine(**fields) -> CompiledPolicy:
    """A compiled policy without the database: ``engine(detectors={"email": "redact"})``."""
    return compile_policies([policy_spec(**fields)])
