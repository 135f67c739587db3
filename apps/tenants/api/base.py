"""What every tenant-scoped management endpoint shares.

The scoping rule: querysets come from selectors called with the caller's readable
tenants, so another tenant's object is a 404, never a 403. ``TenantRolePermission``
then decides, per object, between reading and writing (callers who may write nowhere
get 403 for any write before a lookup, whatever the id: that reveals nothing either). Writes go through services;
the views here only validate input, call one service and render the output.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, filters, serializers, status, viewsets
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.tenants.access import Access, access_for_request
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_list

# --- errors, as the exception handler in apps/core/api.py renders them ----------------


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField(help_text="e.g. invalid_request_error, permission_error.")
    param = serializers.CharField(allow_null=True, help_text="The offending field, if any.")
    code = serializers.CharField(allow_null=True)
    details = serializers.JSONField(
        required=False, help_text="Every validation error, by field (400 only)."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_ERROR_DESCRIPTIONS = {
    400: "Invalid request: the body or a query parameter did not validate.",
    401: "Missing or invalid credentials.",
    403: "Authenticated, but the role or key scope does not allow this.",
    404: "No such object among those the caller can see.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in codes
    }


def crud_schema(
    *,
    noun: str,
    plural: str,
    output: type[serializers.Serializer],
    create_input: type[serializers.Serializer],
    update_input: type[serializers.Serializer],
    created: type[serializers.Serializer] | None = None,
    destroy_errors: tuple[int, ...] = (),
):
    """Summaries, request, response and error bodies of the six CRUD operations."""
    write_errors = error_responses(400, 401, 403, 404)
    return extend_schema_view(
        list=extend_schema(
            summary=f"List {plural}",
            responses={200: output, **error_responses(400, 401, 403)},
        ),
        retrieve=extend_schema(
            summary=f"Get {noun}",
            responses={200: output, **error_responses(401, 403, 404)},
        ),
        create=extend_schema(
            summary=f"Create {noun}",
            request=create_input,
            responses={201: created or output, **error_responses(400, 401, 403)},
        ),
        update=extend_schema(
            summary=f"Replace {noun}",
            request=update_input,
            responses={200: output, **write_errors},
        ),
        partial_update=extend_schema(
            summary=f"Update {noun}",
            request=update_input,
            responses={200: output, **write_errors},
        ),
        destroy=extend_schema(
            summary=f"Delete {noun}",
            responses={
                204: OpenApiResponse(description="Deleted."),
                **error_responses(*sorted({401, 403, 404, *destroy_errors})),
            },
        ),
    )


@contextmanager
def model_errors_as_validation():
    """Model validation raised inside a service becomes a 400 naming the field."""
    try:
        yield
    except DjangoValidationError as exc:
        if hasattr(exc, "error_dict"):
            detail = {
                (api_settings.NON_FIELD_ERRORS_KEY if name == NON_FIELD_ERRORS else name): errors
                for name, errors in exc.message_dict.items()
            }
        else:
            detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
        raise exceptions.ValidationError(detail)


# --- filtering by query parameters -------------------------------------------------------


@dataclass(frozen=True)
class QueryParam:
    """``?name=value`` filtering ``lookup``; ``nullable`` accepts ``null`` (platform objects)."""

    lookup: str
    type: type = str
    description: str = ""
    nullable: bool = False

    def filter(self, queryset: QuerySet, name: str, raw: str) -> QuerySet:
        if self.nullable and raw.lower() in ("null", "none"):
            return queryset.filter(**{f"{self.lookup}__isnull": True})
        return queryset.filter(**{self.lookup: self.parse(name, raw)})

    def parse(self, name: str, raw: str) -> Any:
        if self.type is bool:
            value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
            if value is None:
                raise exceptions.ValidationError({name: "Expected true or false."})
            return value
        if self.type is int:
            value = int(raw) if raw.isascii() and raw.isdigit() else -1
            if not 0 < value < 2**63:  # databases refuse larger integers outright
                raise exceptions.ValidationError({name: "Expected an integer id."})
            return value
        return raw

    def json_type(self) -> str:
        if self.type is bool:
            return "boolean"
        if self.type is int and not self.nullable:
            return "integer"
        return "string"


class QueryParamFilter(filters.BaseFilterBackend):
    """Applies the view's ``filter_params``; an unparseable value is a 400."""

    def filter_queryset(self, request, queryset: QuerySet, view) -> QuerySet:
        for name, param in getattr(view, "filter_params", {}).items():
            raw = request.query_params.get(name)
            if raw not in (None, ""):
                queryset = param.filter(queryset, name, raw)
        return queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": param.description,
                "schema": {"type": param.json_type()},
            }
            for name, param in getattr(view, "filter_params", {}).items()
        ]


TENANT_PARAM = QueryParam(
    "tenant_id",
    int,
    "Only objects of this tenant (id); `null` for platform objects.",
    nullable=True,
)
ENABLED_PARAM = QueryParam("enabled", bool, "Only enabled (true) or disabled (false) objects.")


# --- the owning tenant of new objects ------------------------------------------------------


class WritableTenantField(serializers.PrimaryKeyRelatedField):
    """A tenant id the caller may write to; any other id reads as nonexistent (400)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Tenant.objects.all())
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet[Tenant]:
        access = access_for_request(self.context["request"])
        writable = None if access.writable is None else sorted(access.writable)
        return tenant_list(tenant_ids=writable)


class TenantOwnedCreateSerializer(serializers.Serializer):
    """Input of objects owned by a tenant: resolves ``tenant`` from the caller.

    A key's tenant, or the caller's only writable tenant, is the default; callers
    who can write to several tenants name one. Platform admins may create platform
    objects (tenant null) where ``allow_platform`` says such objects exist.
    """

    allow_platform: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        help_text = (
            "Owning tenant. Defaults to the key's tenant or the caller's only writable tenant."
        )
        if self.allow_platform:
            help_text += " Platform admins may pass null for a platform object."
        self.fields["tenant"] = WritableTenantField(
            allow_null=self.allow_platform, help_text=help_text
        )

    @property
    def access(self) -> Access:
        return access_for_request(self.context["request"])

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The tenant first: the rest of the validation may depend on it.
        return super().validate(self.resolve_tenant(attrs))

    def resolve_tenant(self, attrs: dict[str, Any]) -> dict[str, Any]:
        access = self.access
        if "tenant" in attrs:
            if attrs["tenant"] is None and not access.is_platform_admin:
                raise exceptions.ValidationError(
                    {"tenant": "Only platform admins may create platform objects (null)."}
                )
            return attrs
        if access.writable is None:
            if not self.allow_platform:
                raise exceptions.ValidationError({"tenant": "This field is required."})
            attrs["tenant"] = None
        elif len(access.writable) == 1:
            attrs["tenant"] = tenant_list(tenant_ids=list(access.writable)).get()
        else:
            raise exceptions.ValidationError(
                {"tenant": "You can write to several tenants; say which one."}
            )
        return attrs


# --- the viewset --------------------------------------------------------------------------


class ManagementPagination(LimitOffsetPagination):
    """``?limit=&offset=`` as configured, with a ceiling on ``limit``.

    The ceiling keeps one request from loading a whole table (and a limit the database
    cannot represent from becoming a 500).
    """

    max_limit = 500


class TenantScopedViewSet(viewsets.ModelViewSet):
    """CRUD over a tenant-scoped queryset with separate input and output serializers.

    Subclasses declare ``get_queryset`` (from a selector, with ``self.access.tenant_ids``),
    ``serializer_class`` (output), ``create_serializer_class``/``update_serializer_class``
    (input) and implement ``perform_create``/``perform_update``/``perform_destroy`` by
    calling one service each; the first two return the object to render.
    """

    create_serializer_class: ClassVar[type[serializers.Serializer]]
    update_serializer_class: ClassVar[type[serializers.Serializer]]
    created_serializer_class: ClassVar[type[serializers.Serializer] | None] = None
    lookup_value_regex = r"[0-9]+"
    parser_classes = [JSONParser]
    pagination_class = ManagementPagination
    filter_backends = [QueryParamFilter, filters.SearchFilter, filters.OrderingFilter]
    filter_params: ClassVar[dict[str, QueryParam]] = {}
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]

    @property
    def access(self) -> Access:
        return access_for_request(self.request)

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.action == "create":
            return self.create_serializer_class
        if self.action in ("update", "partial_update"):
            return self.update_serializer_class
        return self.serializer_class

    def render(self, instance: Any, serializer_class: type[serializers.Serializer] | None = None):
        serializer_class = serializer_class or self.serializer_class
        return serializer_class(instance, context=self.get_serializer_context()).data

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with model_errors_as_validation():
            created = self.perform_create(serializer)
        return Response(
            self.render(created, self.created_serializer_class), status=status.HTTP_201_CREATED
        )

    def update(self, request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        with model_errors_as_validation():
            updated = self.perform_update(serializer)
        return Response(self.render(updated))

    def destroy(self, request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        self.perform_destroy(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)
