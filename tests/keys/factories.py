from __future__ import annotations

import itertools

from apps.keys.services import CreatedKey, key_create
from apps.tenants.models import Tenant

_names = itertools.count()


def make_key(tenant: Tenant, **fields) -> CreatedKey:
    """Keys go through the service: it is the only place a secret is born."""
    fields.setdefault("name", f"key-{next(_names)}")
    return key_create(tenant=tenant, **fields)
