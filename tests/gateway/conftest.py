from __future__ import annotations

from dataclasses import dataclass

import pytest

from apps.keys.services import CreatedKey
from apps.providers.models import Model, Provider
from apps.providers.services import deployment_create, model_create, provider_create
from apps.tenants.models import Tenant
from tests.conftest import settle
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory


@dataclass
class Setup:
    url: str
    tenant: Tenant
    key: CreatedKey
    provider: Provider
    mock: Provider

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.secret}"}

    def add_model(
        self, name: str, upstream: str | None = None, *, provider: Provider | None = None, **fields
    ) -> Model:
        model = model_create(
            name=name, input_price_per_million="1.00", output_price_per_million="2.00", **fields
        )
        deployment_create(
            model=model, provider=provider or self.provider, upstream_model=upstream or name
        )
        settle()
        return model


@pytest.fixture
def gw(live_url, fake_openai) -> Setup:
    """A tenant with a key, an `openai` provider on the fake upstream, and a `mock` provider."""
    tenant = TenantFactory(name="acme")
    provider = provider_create(
        name="fake-openai",
        kind="openai",
        base_url=fake_openai.base_url,
        credential=fake_openai.api_key,
    )
    mock = provider_create(name="builtin-mock", kind="mock")
    setup = Setup(url=live_url, tenant=tenant, key=make_key(tenant), provider=provider, mock=mock)
    for name in ("gpt-4o-mini", "slow-model", "drop-model", "hang"):
        model = model_create(
            name=name,
            input_price_per_million="1.00",
            output_price_per_million="2.00",
            timeout_s=2.0 if name == "hang" else None,
        )
        deployment_create(model=model, provider=provider, upstream_model=name)
    embed = model_create(
        name="text-embedding-3-small", mode="embedding", input_price_per_million="0.02"
    )
    deployment_create(model=embed, provider=provider, upstream_model="text-embedding-3-small")
    settle()
    return setup
