"""The billing endpoints in the OpenAPI schema: documented, and true to the responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_schema_validator import validate as validate_instance
from rest_framework.test import APIClient

from apps.billing.services import budget_set, invoice_close, rollup_update
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

JAN = datetime(2025, 1, 1, tzinfo=UTC)


def deref(node: Any, schema: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return deref(schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]], schema)
        return {key: deref(value, schema) for key, value in node.items()}
    if isinstance(node, list):
        return [deref(value, schema) for value in node]
    return node


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_billing_operations_are_documented(schema):
    paths = schema["paths"]
    assert {"get"} <= set(paths["/api/v1/usage/"])
    assert {"get"} <= set(paths["/api/v1/usage/summary/"])
    assert {"get", "post"} <= set(paths["/api/v1/budgets/"])
    assert {"get", "put", "patch", "delete"} <= set(paths["/api/v1/budgets/{id}/"])
    assert set(paths["/api/v1/invoices/"]) >= {"get"} and "post" not in paths["/api/v1/invoices/"]
    csv_op = paths["/api/v1/invoices/{id}/csv/"]["get"]
    assert list(csv_op["responses"]["200"]["content"]) == ["text/csv"]
    for path in ("/api/v1/usage/", "/api/v1/usage/summary/"):
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert {"from", "to", "model", "key"} <= names
    assert "group_by" in {p["name"] for p in paths["/api/v1/usage/summary/"]["get"]["parameters"]}
    budget_in = deref(
        paths["/api/v1/budgets/"]["post"]["requestBody"]["content"]["application/json"]["schema"],
        schema,
    )
    budget_out = deref(
        paths["/api/v1/budgets/{id}/"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ],
        schema,
    )
    assert "webhook_secret" in budget_in["properties"]
    assert "webhook_secret" not in budget_out["properties"]
    assert "has_webhook_secret" in budget_out["properties"]


def test_real_responses_match_the_schema(schema):
    tenant = TenantFactory(name="alpha")
    key = make_key(tenant, scopes=["management:read", "management:write"])
    records(record(tenant, key=key.key, created_at=JAN + timedelta(days=1), cost_usd="0.25"))
    rollup_update()
    invoice = invoice_close(tenant=tenant, period_start=JAN)
    budget = budget_set(tenant=tenant, period="monthly", limit_usd="5", webhook_secret="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")

    def check(response, method: str, path: str) -> None:
        operation = schema["paths"][path][method]
        content = operation["responses"][str(response.status_code)]["content"]
        documented = deref(content["application/json"]["schema"], schema)
        validate_instance(response.json(), documented, cls=OAS30Validator)

    check(client.get("/api/v1/usage/"), "get", "/api/v1/usage/")
    check(client.get("/api/v1/usage/", {"from": "nope"}), "get", "/api/v1/usage/")
    for group in ("day", "model", "key"):
        check(
            client.get("/api/v1/usage/summary/", {"group_by": group}),
            "get",
            "/api/v1/usage/summary/",
        )
    check(client.get("/api/v1/budgets/"), "get", "/api/v1/budgets/")
    check(client.get(f"/api/v1/budgets/{budget.pk}/"), "get", "/api/v1/budgets/{id}/")
    check(
        client.post("/api/v1/budgets/", {"limit_usd": "1", "period": "daily"}, format="json"),
        "post",
        "/api/v1/budgets/",
    )
    check(client.get("/api/v1/invoices/"), "get", "/api/v1/invoices/")
    check(client.get(f"/api/v1/invoices/{invoice.pk}/"), "get", "/api/v1/invoices/{id}/")
    check(client.get("/api/v1/invoices/999999/csv/"), "get", "/api/v1/invoices/{id}/csv/")
