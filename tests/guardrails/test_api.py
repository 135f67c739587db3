"""/api/v1/policies/: tenant-scoped CRUD, validation as 400s, the dry run, the schema."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_schema_validator import validate as validate_instance
from rest_framework.test import APIClient

from apps.guardrails.models import Policy
from tests.guardrails.factories import make_policy
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

RW = ["management:read", "management:write"]


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    acme_admin = make_key(acme, name="acme-admin", scopes=RW)
    acme_reader = make_key(acme, name="acme-reader", scopes=["management:read"])
    beta_admin = make_key(beta, name="beta-admin", scopes=RW)
    return {
        "acme": acme,
        "beta": beta,
        "acme_app": make_key(acme, name="acme-app").key,
        "beta_app": make_key(beta, name="beta-app").key,
        "acme_client": client_for(acme_admin.secret),
        "reader_client": client_for(acme_reader.secret),
        "beta_client": client_for(beta_admin.secret),
        "beta_policy": make_policy(beta, name="beta-words", blocked_terms=["beta"]),
    }


BODY = {
    "name": "pii",
    "detectors": {"email": "redact", "credit_card": "block"},
    "blocked_terms": ["Project Falcon"],
    "regex_rules": [{"pattern": r"\bPRJ-\d{4}\b", "action": "flag", "label": "project"}],
}


def test_create_list_update_delete(world):
    api = world["acme_client"]
    created = api.post("/api/v1/policies/", BODY, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["tenant"] == world["acme"].pk  # the key's tenant by default
    assert body["scope"] == "tenant" and body["key"] is None
    assert body["detectors"] == {"email": "redact", "credit_card": "block"}
    assert body["regex_rules"] == [
        {"pattern": r"\bPRJ-\d{4}\b", "action": "flag", "label": "PROJECT"}
    ]
    assert body["blocked_terms_action"] == "block"
    pk = body["id"]

    listed = api.get("/api/v1/policies/").json()
    assert [p["name"] for p in listed["results"]] == ["pii"]  # not beta's

    patched = api.patch(f"/api/v1/policies/{pk}/", {"enabled": False}, format="json").json()
    assert patched["enabled"] is False and patched["detectors"] == body["detectors"]
    replaced = api.put(
        f"/api/v1/policies/{pk}/",
        {"name": "pii", "detectors": {"iban": "redact"}, "key": world["acme_app"].pk},
        format="json",
    ).json()
    assert replaced["detectors"] == {"iban": "redact"}
    assert replaced["blocked_terms"] == [] and replaced["enabled"] is True
    assert replaced["scope"] == "key" and replaced["key"] == world["acme_app"].pk

    assert api.delete(f"/api/v1/policies/{pk}/").status_code == 204
    assert not Policy.objects.filter(pk=pk).exists()


def test_another_tenants_policies_are_not_found(world):
    api, pk = world["acme_client"], world["beta_policy"].pk
    assert api.get(f"/api/v1/policies/{pk}/").status_code == 404
    assert api.patch(f"/api/v1/policies/{pk}/", {"name": "x"}, format="json").status_code == 404
    assert api.delete(f"/api/v1/policies/{pk}/").status_code == 404
    assert (
        api.post(f"/api/v1/policies/{pk}/try/", {"text": "beta"}, format="json").status_code == 404
    )
    # Nor can a policy be created for another tenant or with another tenant's key.
    response = api.post("/api/v1/policies/", {**BODY, "tenant": world["beta"].pk}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "tenant"
    response = api.post("/api/v1/policies/", {**BODY, "key": world["beta_app"].pk}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "key"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"regex_rules": [{"pattern": "(a+)+$"}]}, "regex_rules"),
        ({"regex_rules": [{"pattern": "(unclosed"}]}, "regex_rules"),
        ({"regex_rules": [{"pattern": "x", "label": "not ok!"}]}, "regex_rules"),
        ({"detectors": {"passport": "block"}}, "detectors"),
        ({"detectors": {"email": "shred"}}, "detectors.email"),
        ({"blocked_terms_action": "shred"}, "blocked_terms_action"),
    ],
)
def test_invalid_rules_are_400s_on_the_field(world, change, param):
    response = world["acme_client"].post("/api/v1/policies/", {**BODY, **change}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"].startswith(param), error
    assert error["code"] == "invalid_value"
    assert not Policy.objects.filter(tenant=world["acme"]).exists()


def test_readers_read_and_try_but_do_not_write(world):
    policy = make_policy(world["acme"], name="pii", detectors={"email": "redact"})
    reader = world["reader_client"]
    assert reader.get(f"/api/v1/policies/{policy.pk}/").status_code == 200
    assert reader.post("/api/v1/policies/", BODY, format="json").status_code == 403
    response = reader.post(
        f"/api/v1/policies/{policy.pk}/try/", {"text": "mail jo@example.com"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["input"] == {
        "checked": True,
        "blocked": False,
        "text": "mail [REDACTED:EMAIL]",
        "reason": "",
        "redactions": ["EMAIL"],
        "flags": [],
    }


def test_try_reports_blocks(world):
    policy = make_policy(
        world["acme"], name="pii", **{k: v for k, v in BODY.items() if k != "name"}
    )
    response = world["acme_client"].post(
        f"/api/v1/policies/{policy.pk}/try/",
        {"text": "PRJ-1234: pay 4111 1111 1111 1111"},
        format="json",
    )
    body = response.json()
    assert body["input"]["blocked"] and body["input"]["text"] == ""
    assert "CREDIT_CARD" in body["input"]["reason"]
    assert body["output"]["blocked"] and body["output"]["text"] == "PRJ-1234: pay "
    assert body["output"]["flags"] == ["PROJECT"]


# --- the schema ------------------------------------------------------------------------


def deref(node: Any, schema: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return deref(schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]], schema)
        return {key: deref(value, schema) for key, value in node.items()}
    if isinstance(node, list):
        return [deref(value, schema) for value in node]
    return node


def test_responses_match_the_documented_schema(world):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/policies/"])
    assert {"get", "put", "patch", "delete"} <= set(paths["/api/v1/policies/{id}/"])
    assert "post" in paths["/api/v1/policies/{id}/try/"]
    body_in = deref(
        paths["/api/v1/policies/"]["post"]["requestBody"]["content"]["application/json"]["schema"],
        schema,
    )
    assert set(body_in["properties"]["detectors"]["properties"]) == {
        "email",
        "phone",
        "credit_card",
        "iban",
        "us_ssn",
        "secret_token",
    }
    api = world["acme_client"]

    def check(response, method: str, path: str) -> None:
        content = paths[path][method]["responses"][str(response.status_code)]["content"]
        validate_instance(
            response.json(),
            deref(content["application/json"]["schema"], schema),
            cls=OAS30Validator,
        )

    created = api.post("/api/v1/policies/", BODY, format="json")
    check(created, "post", "/api/v1/policies/")
    pk = created.json()["id"]
    check(api.post("/api/v1/policies/", {"name": ""}, format="json"), "post", "/api/v1/policies/")
    check(api.get("/api/v1/policies/"), "get", "/api/v1/policies/")
    check(api.get(f"/api/v1/policies/{pk}/"), "get", "/api/v1/policies/{id}/")
    check(
        api.post(f"/api/v1/policies/{pk}/try/", {"text": "jo@example.com"}, format="json"),
        "post",
        "/api/v1/policies/{id}/try/",
    )
