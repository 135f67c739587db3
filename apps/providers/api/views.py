from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from apps.providers.api.serializers import (
    ModelCreateSerializer,
    ModelSerializer,
    ModelUpdateSerializer,
    ProviderCreateSerializer,
    ProviderSerializer,
    ProviderTestResultSerializer,
    ProviderUpdateSerializer,
)
from apps.providers.models import Model, Provider
from apps.providers.selectors import model_list, provider_list
from apps.providers.services import (
    model_create,
    model_delete,
    model_deployments_set,
    model_update,
    provider_create,
    provider_delete,
    provider_test_connection,
    provider_update,
)
from apps.tenants.access import access_for_request
from apps.tenants.api.base import (
    ENABLED_PARAM,
    TENANT_PARAM,
    QueryParam,
    TenantScopedViewSet,
    crud_schema,
    error_responses,
)


@crud_schema(
    noun="a provider",
    plural="providers",
    output=ProviderSerializer,
    create_input=ProviderCreateSerializer,
    update_input=ProviderUpdateSerializer,
    destroy_errors=(400,),
)
class ProviderViewSet(TenantScopedViewSet):
    """Upstream providers: a tenant's own (bring your own key); platform admins see all.

    The credential is write-only: responses say whether one is set and where it lives.
    """

    serializer_class = ProviderSerializer
    create_serializer_class = ProviderCreateSerializer
    update_serializer_class = ProviderUpdateSerializer
    filter_params = {
        "tenant": TENANT_PARAM,
        "kind": QueryParam("kind", str, "Only providers of this kind, e.g. openai."),
        "enabled": ENABLED_PARAM,
    }

    def get_queryset(self):
        # provider_list scopes to the tenants' own providers: platform providers are
        # platform infrastructure and only platform admins (tenant_ids None) see them.
        return provider_list(tenant_ids=self.access.tenant_ids)

    def perform_create(self, serializer) -> Provider:
        return provider_create(**serializer.validated_data)

    def perform_update(self, serializer) -> Provider:
        return provider_update(provider=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Provider) -> None:
        provider_delete(provider=instance)


class ProviderTestApi(generics.GenericAPIView):
    """Check that the provider answers and accepts its credential (a free call upstream)."""

    serializer_class = ProviderTestResultSerializer
    parser_classes = [JSONParser]

    def get_queryset(self):
        return provider_list(tenant_ids=access_for_request(self.request).tenant_ids)

    @extend_schema(
        operation_id="providers_test",
        summary="Test a provider's connection",
        request=None,
        responses={200: ProviderTestResultSerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request, *args, **kwargs) -> Response:
        provider = self.get_object()
        ok, message = provider_test_connection(provider=provider)
        return Response(self.get_serializer({"ok": ok, "message": message}).data)


@crud_schema(
    noun="a model",
    plural="models",
    output=ModelSerializer,
    create_input=ModelCreateSerializer,
    update_input=ModelUpdateSerializer,
)
class ModelViewSet(TenantScopedViewSet):
    """Models as clients name them, with their deployments.

    Tenants read platform models (tenant null) besides their own, and change only their own.
    """

    serializer_class = ModelSerializer
    create_serializer_class = ModelCreateSerializer
    update_serializer_class = ModelUpdateSerializer
    filter_params = {
        "tenant": TENANT_PARAM,
        "mode": QueryParam("mode", str, "Only models of this mode: chat or embedding."),
        "enabled": ENABLED_PARAM,
    }

    def get_queryset(self):
        return model_list(tenant_ids=self.access.tenant_ids)

    @transaction.atomic
    def perform_create(self, serializer) -> Model:
        fields = dict(serializer.validated_data)
        deployments = fields.pop("deployments", None)
        model = model_create(**fields)
        if deployments is not None:
            self._set_deployments(model, deployments)
        return self._reload(model)

    @transaction.atomic
    def perform_update(self, serializer) -> Model:
        fields = dict(serializer.validated_data)
        deployments = fields.pop("deployments", None)
        model = model_update(model=serializer.instance, **fields)
        if deployments is not None:
            self._set_deployments(model, deployments)
        return self._reload(model)

    def perform_destroy(self, instance: Model) -> None:
        model_delete(model=instance)

    def _set_deployments(self, model: Model, deployments: list[dict]) -> None:
        model_deployments_set(
            model=model, deployments=deployments, provider_tenant_ids=self.access.tenant_ids
        )

    def _reload(self, model: Model) -> Model:
        return self.get_queryset().get(pk=model.pk)
