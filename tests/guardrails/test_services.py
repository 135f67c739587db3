"""Writes: validation on save, key ownership, updates and deletes."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.guardrails.models import Policy
from apps.guardrails.services import policy_create, policy_delete, policy_update
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return TenantFactory(name="acme")


def test_create_normalises(acme):
    policy = policy_create(
        tenant=acme,
        name="pii",
        blocked_terms=["  Top   Secret ", "top secret", ""],
        regex_rules=[{"pattern": r"\bPRJ-\d+\b", "label": "project code"}],
        detectors={"email": "REDACT", "phone": "off"},
    )
    policy.refresh_from_db()
    assert policy.blocked_terms == ["Top Secret"]
    assert policy.regex_rules == [
        {"pattern": r"\bPRJ-\d+\b", "action": "redact", "label": "PROJECT_CODE"}
    ]
    assert policy.detectors == {"email": "redact"}
    assert policy.scope_label == "tenant default"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"regex_rules": [{"pattern": "(unclosed"}]}, "regex_rules"),
        ({"regex_rules": [{"pattern": "(x+)*y"}]}, "regex_rules"),
        ({"detectors": {"email": "shred"}}, "detectors"),
        ({"detectors": {"passport": "block"}}, "detectors"),
        ({"blocked_terms": ["x" * 200]}, "blocked_terms"),
        ({"blocked_terms_action": "shred"}, "blocked_terms_action"),
    ],
)
def test_invalid_policies_are_refused_with_the_field(acme, fields, field):
    with pytest.raises(ValidationError) as info:
        policy_create(tenant=acme, name="bad", **fields)
    assert field in info.value.message_dict
    assert not Policy.objects.exists()


def test_a_key_policy_must_use_a_key_of_the_same_tenant(acme):
    other = make_key(TenantFactory(name="beta")).key
    with pytest.raises(ValidationError) as info:
        policy_create(tenant=acme, name="k", key=other)
    assert "key" in info.value.message_dict
    mine = make_key(acme).key
    assert policy_create(tenant=acme, name="k", key=mine).scope_label == f"key {mine.name}"


def test_names_are_unique_per_tenant(acme):
    policy_create(tenant=acme, name="pii")
    with pytest.raises(ValidationError):
        policy_create(tenant=acme, name="pii")
    policy_create(tenant=TenantFactory(name="beta"), name="pii")


def test_terms_action_is_constrained_in_the_database(acme):
    policy = policy_create(tenant=acme, name="pii")
    with pytest.raises(IntegrityError), transaction.atomic():
        Policy.objects.filter(pk=policy.pk).update(blocked_terms_action="shred")


def test_update_and_delete(acme):
    policy = policy_create(tenant=acme, name="pii")
    policy_update(policy=policy, enabled=False, detectors={"iban": "flag"})
    policy.refresh_from_db()
    assert policy.enabled is False and policy.detectors == {"iban": "flag"}
    with pytest.raises(ValidationError):
        policy_update(policy=policy, regex_rules=[{"pattern": ""}])
    with pytest.raises(TypeError):
        policy_update(policy=policy, tenant=acme)
    policy_delete(policy=policy)
    assert not Policy.objects.exists()
