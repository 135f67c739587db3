"""/api/v1/policies/: tenant-scoped CRUD for content policies, and a dry run."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from apps.guardrails.api.serializers import (
    PolicyCreateSerializer,
    PolicySerializer,
    PolicyTryResultSerializer,
    PolicyTrySerializer,
    PolicyUpdateSerializer,
)
from apps.guardrails.engine import compile_policies
from apps.guardrails.models import Policy
from apps.guardrails.selectors import policy_list
from apps.guardrails.services import policy_create, policy_delete, policy_update
from apps.tenants.access import access_for_request
from apps.tenants.api.base import (
    ENABLED_PARAM,
    QueryParam,
    TenantScopedViewSet,
    crud_schema,
    error_responses,
)
from apps.tenants.permissions import TenantRolePermission


@crud_schema(
    noun="a content policy",
    plural="content policies",
    output=PolicySerializer,
    create_input=PolicyCreateSerializer,
    update_input=PolicyUpdateSerializer,
)
class PolicyViewSet(TenantScopedViewSet):
    """Content policies: detectors (PII, secrets), blocked terms and regex rules that
    block, redact or flag prompts and answers. A tenant's policies apply to all its keys;
    a key with policies of its own uses those instead."""

    serializer_class = PolicySerializer
    create_serializer_class = PolicyCreateSerializer
    update_serializer_class = PolicyUpdateSerializer
    filter_params = {
        "tenant": QueryParam("tenant_id", int, "Only policies of this tenant (id)."),
        "key": QueryParam(
            "key_id", int, "Only policies of this key (id); `null`: tenant defaults.", nullable=True
        ),
        "enabled": ENABLED_PARAM,
    }
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["tenant_id", "name"]

    def get_queryset(self):
        return policy_list(tenant_ids=self.access.tenant_ids)

    def perform_create(self, serializer) -> Policy:
        return policy_create(**serializer.validated_data)

    def perform_update(self, serializer) -> Policy:
        return policy_update(policy=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Policy) -> None:
        policy_delete(policy=instance)


class ReadIsEnough(TenantRolePermission):
    """A command that changes nothing: whoever may read the object may run it."""

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        access = access_for_request(request)
        return access.readable is None or bool(access.readable)

    def has_object_permission(self, request, view, obj) -> bool:
        return access_for_request(request).can_read(obj.tenant_id)


class PolicyTryApi(generics.GenericAPIView):
    """Check sample text against a saved policy, as a prompt and as an answer (whether
    or not the policy is enabled). Nothing is stored or logged."""

    serializer_class = PolicyTrySerializer
    parser_classes = [JSONParser]
    permission_classes = [ReadIsEnough]

    def get_queryset(self):
        return policy_list(tenant_ids=access_for_request(self.request).tenant_ids)

    @extend_schema(
        operation_id="policies_try",
        summary="Try a content policy on sample text",
        request=PolicyTrySerializer,
        responses={200: PolicyTryResultSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request, *args: Any, **kwargs: Any) -> Response:
        policy = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        text = serializer.validated_data["text"]
        compiled = compile_policies([policy.spec()])
        verdict = compiled.check_input([{"role": "user", "content": text}])
        answer = compiled.filter_output_text(text)
        body = {
            "input": {
                "checked": compiled.filters_input,
                "blocked": verdict.blocked,
                "text": "" if verdict.blocked else verdict.messages[0]["content"],
                "reason": verdict.reason,
                "redactions": list(verdict.redactions),
                "flags": list(verdict.flags),
            },
            "output": {
                "checked": compiled.filters_output,
                "blocked": answer.blocked,
                "text": answer.emit,
                "reason": answer.reason,
                "redactions": list(answer.redactions),
                "flags": list(answer.flags),
            },
        }
        return Response(PolicyTryResultSerializer(body).data)
