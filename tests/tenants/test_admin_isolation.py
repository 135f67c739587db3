"""Every admin page, for every model: a staff user of tenant B never sees, opens, changes
or deletes tenant A's objects. The list of admins comes from the admin site itself, so a
newly registered model is covered (or this test says it has no sample data for it)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import (
    Budget,
    BudgetAlert,
    Invoice,
    InvoiceLine,
    ModelRateLimit,
    UsageRecord,
    UsageRollup,
)
from apps.keys.services import key_create
from apps.providers.models import Price
from apps.providers.services import deployment_create, model_create, provider_create
from apps.tenants.models import Role
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


def tenant_a_objects(tenant) -> None:
    """One object of every tenant-owned kind, owned by ``tenant``."""
    key = key_create(tenant=tenant, name="a-key").key
    provider = provider_create(name="a-provider", kind="mock", tenant=tenant)
    model = model_create(name="a-model", tenant=tenant, input_price_per_million="1")
    deployment_create(model=model, provider=provider, upstream_model="a-upstream")
    assert Price.objects.filter(model=model).exists()
    budget = Budget.objects.create(tenant=tenant, limit_usd=Decimal("10"))
    BudgetAlert.objects.create(
        budget=budget, period_start=timezone.now(), level="soft", spent_usd=Decimal("8")
    )
    ModelRateLimit.objects.create(tenant=tenant, model_name="a-model", rpm=10)
    invoice = Invoice.objects.create(
        tenant=tenant, period_start=timezone.now(), period_end=timezone.now()
    )
    InvoiceLine.objects.create(invoice=invoice, model_name="a-model")
    UsageRecord.objects.create(
        record_id=uuid.uuid4(),
        created_at=timezone.now(),
        request_id="a-req",
        tenant=tenant,
        key=key,
        requested_model="a-model",
        status=200,
    )
    UsageRollup.objects.create(
        bucket=timezone.now().replace(minute=0, second=0, microsecond=0),
        tenant=tenant,
        key_id=key.pk,
        model_name="a-model",
    )
    if apps.is_installed("apps.guardrails"):
        from apps.guardrails.models import Policy

        Policy.objects.create(tenant=tenant, name="a-policy", blocked_terms=["secret-plan"])


def scoped_querysets(tenant):
    for model, model_admin in admin.site._registry.items():
        lookup = getattr(model_admin, "tenant_lookup", None) or getattr(
            model_admin, "parent_tenant_lookup", None
        )
        yield model, model_admin, lookup


def test_tenant_b_staff_cannot_reach_tenant_a_objects_in_any_admin():
    tenant_a, tenant_b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    tenant_a_objects(tenant_a)
    MembershipFactory(user=UserFactory(username="a-admin"), tenant=tenant_a, role=Role.OWNER)
    b_user = UserFactory(username="b-admin")
    MembershipFactory(user=b_user, tenant=tenant_b, role=Role.OWNER)
    client = Client()
    client.force_login(b_user)

    checked, missing = 0, []
    for model, _model_admin, lookup in scoped_querysets(tenant_a):
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        if lookup is None:
            # not tenant-owned (users, groups, internal state): tenant staff get nothing
            response = client.get(changelist)
            assert response.status_code in (302, 403), f"{opts.label} is open to tenant staff"
            continue
        field = "pk" if lookup == "pk" else lookup
        objects = list(
            model._default_manager.filter(**{field: tenant_a.pk if field == "pk" else tenant_a})
        )
        if not objects:
            missing.append(opts.label)
            continue
        before = model._default_manager.count()
        listing = client.get(changelist)
        assert listing.status_code in (200, 302, 403), opts.label
        for obj in objects:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            delete = reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[obj.pk])
            if listing.status_code == 200:
                assert change not in listing.content.decode(), (
                    f"{opts.label} lists tenant A's object"
                )
            assert client.get(change).status_code in (302, 403, 404), (
                f"{opts.label} change view opens"
            )
            assert client.post(change, {}).status_code in (302, 403, 404), (
                f"{opts.label} change accepted"
            )
            assert client.get(delete).status_code in (302, 403, 404), (
                f"{opts.label} delete view opens"
            )
            client.post(delete, {"post": "yes"})
            checked += 1
        # bulk delete through the changelist action
        client.post(
            changelist,
            {
                "action": "delete_selected",
                "_selected_action": [o.pk for o in objects],
                "post": "yes",
            },
        )
        assert model._default_manager.count() == before, (
            f"{opts.label}: tenant A's objects were deleted"
        )
    assert not missing, (
        f"no tenant-A sample objects for: {', '.join(missing)} (add them to tenant_a_objects)"
    )
    assert checked >= 10
