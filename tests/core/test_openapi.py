"""The OpenAPI schema: valid, complete for /api/v1/, and true to what the API returns.

Product decision: the schema and the docs pages are public. They describe the shape of
an open-source API, hold no tenant data, and every operation they list still needs a
key or a session.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_schema_validator import OAS30Validator
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from tests.keys.factories import make_key
from tests.providers.factories import DeploymentFactory, ModelFactory, ProviderFactory
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

PREFIX = "/api/v1/"
METHODS = {"get", "post", "put", "patch", "delete"}
# Commands that take no body; every other POST/PUT/PATCH must document one.
BODYLESS = {("post", "/api/v1/keys/{}/revoke/"), ("post", "/api/v1/providers/{}/test/")}


def _walk(patterns: list, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            found.append((route, entry.callback))
    return found


def _openapi_path(route: str) -> str:
    route = route.replace("^", "").replace("$", "")
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", route)
    route = re.sub(r"<(?:\w+:)?\w+>", "{}", route)
    return "/" + route


def exposed_api_operations() -> set[tuple[str, str]]:
    """(method, path) of every DRF view the URLconf routes under /api/v1/."""
    operations = set()
    for route, callback in _walk(get_resolver().url_patterns):
        path = _openapi_path(route)
        view = getattr(callback, "cls", None)
        if not path.startswith(PREFIX) or view is None:
            continue
        actions = getattr(callback, "actions", None)
        if actions is not None:  # a viewset route
            methods = set(actions)
        else:
            methods = {m for m in view.http_method_names if hasattr(view, m)}
        # HEAD and OPTIONS come with GET and with every view; the schema omits them.
        operations |= {(method, path) for method in methods & METHODS}
    return operations


def normalised(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})  # public: see above
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return response.json()


def deref(node: Any, schema: dict) -> Any:
    """The node with every $ref inlined (our schema has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return deref(schema["components"]["schemas"][name], schema)
        return {key: deref(value, schema) for key, value in node.items()}
    if isinstance(node, list):
        return [deref(value, schema) for value in node]
    return node


def response_schema(schema: dict, method: str, path: str, status: int) -> dict:
    operation = schema["paths"][path][method]
    content = operation["responses"][str(status)]["content"]["application/json"]
    return deref(content["schema"], schema)


def test_schema_is_valid_openapi(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")


def test_every_exposed_operation_is_documented(schema):
    exposed = exposed_api_operations()
    # The walk found the API (a broken walk must not pass vacuously).
    assert ("post", "/api/v1/keys/{}/revoke/") in exposed
    assert {m for m, _ in exposed} == METHODS
    documented = {
        (method, normalised(path))
        for path, item in schema["paths"].items()
        for method in item
        if method in METHODS
    }
    assert exposed - documented == set()
    assert {op for op in documented if op[1].startswith(PREFIX)} == exposed


# Endpoints that answer a file rather than JSON (their errors are still JSON).
DOWNLOADS = {("get", "/api/v1/invoices/{}/csv/"): "text/csv"}


def test_operations_have_bodies_and_errors(schema):
    operations = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            operations += 1
            where = f"{method.upper()} {path}"
            if method in {"post", "put", "patch"}:
                if (method, normalised(path)) in BODYLESS:
                    assert "requestBody" not in operation, where
                else:
                    body = operation["requestBody"]["content"]
                    assert list(body) == ["application/json"], where
                    assert body["application/json"]["schema"], where

            responses = operation["responses"]
            success = [code for code in responses if code.startswith("2")]
            assert len(success) == 1, where
            if method == "delete":
                assert success == ["204"], where
            else:
                media = DOWNLOADS.get((method, normalised(path)), "application/json")
                assert responses[success[0]]["content"][media]["schema"], where

            for code in ("401", "403") + (("404",) if "{id}" in path else ()):
                error = responses[code]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/Error"}, where
            if method in {"post", "put", "patch"} and (method, normalised(path)) not in BODYLESS:
                assert "400" in responses, where
            assert operation["security"], where
    assert operations >= 20


def test_create_key_documents_the_secret_once(schema):
    created = response_schema(schema, "post", "/api/v1/keys/", 201)
    assert "secret" in created["properties"]
    listed = response_schema(schema, "get", "/api/v1/keys/{id}/", 200)
    assert "secret" not in listed["properties"] and "secret_hash" not in listed["properties"]
    provider_in = deref(
        schema["paths"]["/api/v1/providers/"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
        schema,
    )
    provider_out = response_schema(schema, "get", "/api/v1/providers/{id}/", 200)
    assert "credential" in provider_in["properties"]
    assert "credential" not in provider_out["properties"]
    assert "has_credential" in provider_out["properties"]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}


def test_real_responses_match_the_documented_schemas(schema, settings):
    """The schema tells the truth: actual bodies validate against what it documents."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tenant = TenantFactory(name="alpha")
    provider = ProviderFactory(name="alpha-mock", tenant=tenant)
    model = ModelFactory(name="alpha-model", tenant=tenant, fallbacks=["x"])
    DeploymentFactory(model=model, provider=provider)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION="Bearer "
        + make_key(tenant, scopes=["management:read", "management:write"]).secret
    )

    def check(response, method: str, path: str) -> None:
        documented = response_schema(schema, method, path, response.status_code)
        validate_instance(response.json(), documented, cls=OAS30Validator)

    check(client.post("/api/v1/keys/", {"name": "k"}, format="json"), "post", "/api/v1/keys/")
    check(client.get("/api/v1/keys/"), "get", "/api/v1/keys/")
    check(client.get(f"/api/v1/tenants/{tenant.pk}/"), "get", "/api/v1/tenants/{id}/")
    check(client.get(f"/api/v1/providers/{provider.pk}/"), "get", "/api/v1/providers/{id}/")
    check(
        client.post(f"/api/v1/providers/{provider.pk}/test/"),
        "post",
        "/api/v1/providers/{id}/test/",
    )
    check(client.get("/api/v1/models/"), "get", "/api/v1/models/")
    check(client.get(f"/api/v1/models/{model.pk}/"), "get", "/api/v1/models/{id}/")
    check(client.get("/api/v1/models/999999/"), "get", "/api/v1/models/{id}/")
    check(client.post("/api/v1/keys/", {"rpm": -1}, format="json"), "post", "/api/v1/keys/")
    check(APIClient().get("/api/v1/keys/"), "get", "/api/v1/keys/")


def test_unexpected_errors_in_the_api_keep_the_error_shape(admin_client, monkeypatch):
    from apps.tenants.api import views

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.TenantViewSet, "list", explode)
    admin_client.raise_request_exception = False
    response = admin_client.get("/api/v1/tenants/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "boom" not in response.content.decode()
