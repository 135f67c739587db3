"""Any write to routing configuration, through services or plain ORM saves (as the admin
does), moves the change token that gateway processes poll."""

from __future__ import annotations

import pytest

from apps.billing.models import Budget
from apps.core.selectors import config_token
from apps.core.services import ROUTING
from apps.providers.models import Deployment, Model, Price, Provider
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db


def bumped(django_capture_on_commit_callbacks, action) -> bool:
    before = config_token(name=ROUTING)
    with django_capture_on_commit_callbacks(execute=True):
        action()
    return config_token(name=ROUTING) != before


def test_orm_saves_and_deletes_bump_the_token(django_capture_on_commit_callbacks):
    tenant = TenantFactory()
    provider = Provider(name="p", kind="mock")
    assert bumped(django_capture_on_commit_callbacks, provider.save)
    model = Model(name="m")
    assert bumped(django_capture_on_commit_callbacks, model.save)
    deployment = Deployment(model=model, provider=provider, upstream_model="x")
    assert bumped(django_capture_on_commit_callbacks, deployment.save)
    budget = Budget(tenant=tenant, limit_usd=1)
    assert bumped(django_capture_on_commit_callbacks, budget.save)
    assert bumped(django_capture_on_commit_callbacks, deployment.delete)


def test_list_price_changes_start_a_new_price(django_capture_on_commit_callbacks):
    model = Model.objects.create(name="m", input_price_per_million=1, output_price_per_million=2)
    assert Price.objects.filter(model=model).count() == 1
    model.description = "no price change"
    model.save()
    assert Price.objects.filter(model=model).count() == 1
    model.output_price_per_million = 3
    model.save()
    prices = list(Price.objects.filter(model=model).order_by("effective_from"))
    assert [p.output_per_million for p in prices] == [2, 3]
