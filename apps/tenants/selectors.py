from __future__ import annotations

from django.db.models import QuerySet

from apps.tenants.models import Tenant


def tenant_list(*, tenant_ids: list[int] | None) -> QuerySet[Tenant]:
    """The given tenants; ``None`` means every tenant (superusers)."""
    qs = Tenant.objects.all()
    return qs if tenant_ids is None else qs.filter(pk__in=tenant_ids)
