from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from apps.keys.api import schema  # noqa: F401  (documents key authentication)
from apps.keys.api.serializers import (
    KeyCreatedSerializer,
    KeyCreateSerializer,
    KeyRotateSerializer,
    KeySerializer,
    KeyUpdateSerializer,
)
from apps.keys.models import ApiKey
from apps.keys.selectors import key_list
from apps.keys.services import (
    CreatedKey,
    key_create,
    key_delete,
    key_revoke,
    key_rotate,
    key_update,
)
from apps.tenants.access import access_for_request
from apps.tenants.api.base import (
    TENANT_PARAM,
    TenantScopedViewSet,
    crud_schema,
    error_responses,
    model_errors_as_validation,
)


@crud_schema(
    noun="a key",
    plural="keys",
    output=KeySerializer,
    create_input=KeyCreateSerializer,
    update_input=KeyUpdateSerializer,
    created=KeyCreatedSerializer,
)
class KeyViewSet(TenantScopedViewSet):
    """Gateway API keys. Creating one returns its secret, once."""

    serializer_class = KeySerializer
    create_serializer_class = KeyCreateSerializer
    update_serializer_class = KeyUpdateSerializer
    created_serializer_class = KeyCreatedSerializer
    filter_params = {"tenant": TENANT_PARAM}
    search_fields = ["name", "prefix"]

    def get_queryset(self):
        return key_list(tenant_ids=self.access.tenant_ids)

    def perform_create(self, serializer) -> CreatedKey:
        # A key-authenticated caller has no user to record.
        user = None if isinstance(self.request.auth, ApiKey) else self.request.user
        return key_create(created_by=user, **serializer.validated_data)

    def perform_update(self, serializer) -> ApiKey:
        return key_update(key=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: ApiKey) -> None:
        key_delete(key=instance)


class KeyRevokeApi(generics.GenericAPIView):
    """Revoke a key: it stops authenticating at once and cannot be re-enabled."""

    serializer_class = KeySerializer
    parser_classes = [JSONParser]

    def get_queryset(self):
        return key_list(tenant_ids=access_for_request(self.request).tenant_ids)

    @extend_schema(
        operation_id="keys_revoke",
        summary="Revoke a key",
        request=None,
        responses={200: KeySerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request, *args, **kwargs) -> Response:
        key = self.get_object()
        with model_errors_as_validation():
            key = key_revoke(key=key)
        return Response(self.get_serializer(key).data)


class KeyRotateApi(generics.GenericAPIView):
    """Give a key a new secret, shown once; the old one keeps working for a grace period."""

    serializer_class = KeyRotateSerializer
    parser_classes = [JSONParser]

    def get_queryset(self):
        return key_list(tenant_ids=access_for_request(self.request).tenant_ids)

    @extend_schema(
        operation_id="keys_rotate",
        summary="Rotate a key's secret",
        request=KeyRotateSerializer,
        responses={200: KeyCreatedSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request, *args, **kwargs) -> Response:
        key = self.get_object()
        serializer = KeyRotateSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        with model_errors_as_validation():
            rotated = key_rotate(key=key, grace_seconds=serializer.validated_data["grace_seconds"])
        return Response(KeyCreatedSerializer(rotated, context=self.get_serializer_context()).data)
