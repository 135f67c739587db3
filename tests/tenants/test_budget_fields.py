"""A tenant's budget fields (config as code, the admin, the API) are enforced: they are
kept in step with the billing Budget the request path reads."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from django.core.management import call_command

from apps.billing.models import Budget
from apps.billing.selectors import limits_table_load
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create, tenant_update

pytestmark = pytest.mark.django_db


def test_config_as_code_budget_becomes_an_enforced_budget(tmp_path, capsys):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {"tenants": [{"name": "acme", "budget": {"limit_usd": 100, "period": "monthly"}}]}
        )
    )
    call_command("gateway_config", "apply", str(path))
    tenant = Tenant.objects.get(name="acme")
    budget = Budget.objects.get(tenant=tenant, key__isnull=True)
    assert (budget.period, budget.limit_usd) == ("monthly", Decimal("100"))
    assert [b.id for b in limits_table_load().budgets_for(tenant.pk, 0)] == [budget.pk]


def test_changing_and_clearing_the_budget_fields():
    tenant = tenant_create(name="t", budget_limit_usd=Decimal("5"), budget_period="daily")
    assert Budget.objects.get(tenant=tenant).limit_usd == Decimal("5")
    tenant_update(tenant=tenant, budget_limit_usd=Decimal("7"), budget_period="weekly")
    assert list(Budget.objects.filter(tenant=tenant).values_list("period", "limit_usd")) == [
        ("weekly", Decimal("7"))
    ]
    tenant_update(tenant=tenant, budget_limit_usd=None)
    assert not Budget.objects.filter(tenant=tenant).exists()
    # a budget created elsewhere (another period, through the budgets API) is left alone
    from apps.billing.services import budget_set

    budget_set(tenant=tenant, period="total", limit_usd="50")
    tenant_update(tenant=tenant, display_name="renamed")
    assert Budget.objects.filter(tenant=tenant, period="total").exists()
