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
    _budget_sync(tenant, previous_period=None)
    return tenant


def _budget_sync(tenant: Tenant, *, previous_period: str | None) -> None:
    """The tenant's own budget fields (as config as code and the admin set them) are
    enforced through the billing Budget of that period, which this keeps in step."""
    from apps.billing.models import Budget
    from apps.billing.services import budget_delete, budget_set

    own = Budget.objects.filter(tenant=tenant, key__isnull=True)
    if previous_period and previous_period != tenant.budget_period:
        for budget in own.filter(period=previous_period):
            budget_delete(budget=budget)
    if tenant.budget_limit_usd is None:
        for budget in own.filter(period=tenant.budget_period):
            budget_delete(budget=budget)
        return
    current = own.filter(period=tenant.budget_period).first()
    if current is None or current.limit_usd != tenant.budget_limit_usd:
        budget_set(
            tenant=tenant,
            period=tenant.budget_period,
            limit_usd=tenant.budget_limit_usd,
            soft_limit_pct=current.soft_limit_pct if current else 80,
            webhook_url=current.webhook_url if current else "",
        )


@transaction.atomic
def tenant_update(*, tenant: Tenant, **fields: object) -> Tenant:
    unknown = set(fields) - TENANT_FIELDS
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    previous_period = tenant.budget_period
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.full_clean()
    tenant.save()
    if {"budget_limit_usd", "budget_period"} & set(fields):
        _budget_sync(tenant, previous_period=previous_period)
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
