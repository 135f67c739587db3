from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from apps.core.services import config_changed
from apps.providers.services import provider_deployments_delete
from apps.tenants.models import BudgetPeriod, Membership, Role, Tenant

TENANT_FIELDS = {"display_name", "is_active", "budget_limit_usd", "budget_period", "metadata"}


@transaction.atomic
def tenant_create(
    *,
    name: str,
    display_name: str = "",
    is_active: bool = True,
    budget_limit_usd: Decimal | None = None,
    budget_period: str = BudgetPeriod.MONTHLY,
    metadata: dict | None = None,
) -> Tenant:
    tenant = Tenant(
        name=name,
        display_name=display_name,
        is_active=is_active,
        budget_limit_usd=budget_limit_usd,
        budget_period=budget_period,
        metadata=metadata or {},
    )
    tenant.full_clean()
    tenant.save()
    return tenant


@transaction.atomic
def tenant_update(*, tenant: Tenant, **fields: object) -> Tenant:
    unknown = set(fields) - TENANT_FIELDS
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.full_clean()
    tenant.save()
    config_changed()
    return tenant


@transaction.atomic
def tenant_delete(*, tenant: Tenant) -> None:
    """Delete a tenant and everything it owns.

    A deployment protects its provider from deletion, so the deployments on the
    tenant's providers go first; the cascade then takes its providers and models.
    """
    provider_deployments_delete(tenant=tenant)
    tenant.delete()
    config_changed()


@transaction.atomic
def membership_set(
    *, user: AbstractBaseUser, tenant: Tenant, role: str = Role.MEMBER
) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        user=user, tenant=tenant, defaults={"role": role}
    )
    return membership


@transaction.atomic
def membership_delete(*, membership: Membership) -> None:
    membership.delete()
