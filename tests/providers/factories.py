from __future__ import annotations

from decimal import Decimal

import factory

from apps.providers.models import Deployment, Model, Provider


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = "mock"
    tenant = None


class ModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Model

    name = factory.Sequence(lambda n: f"model-{n}")
    tenant = None
    input_price_per_million = Decimal("1.00")
    output_price_per_million = Decimal("2.00")


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deployment

    model = factory.SubFactory(ModelFactory)
    provider = factory.SubFactory(ProviderFactory)
    upstream_model = factory.LazyAttribute(lambda o: o.model.name)
