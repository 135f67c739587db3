"""The in-memory policy table: per-tenant scoping and key overrides."""

from __future__ import annotations

import pytest

from apps.core.selectors import config_token
from apps.core.services import ROUTING
from apps.guardrails.models import Policy
from apps.guardrails.selectors import policies_load, policy_list
from tests.guardrails.factories import make_policy
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

CARD = "pay with 4111 1111 1111 1111"


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    return {
        "acme": acme,
        "beta": beta,
        "acme_key": make_key(acme, name="acme-app").key,
        "acme_other": make_key(acme, name="acme-batch").key,
        "beta_key": make_key(beta, name="beta-app").key,
    }


def test_a_tenants_policy_never_applies_to_another_tenant(world):
    make_policy(world["acme"], detectors={"credit_card": "block"})
    table = policies_load()
    acme = table.policy_for(world["acme"].pk, world["acme_key"].pk)
    assert acme is not None and acme.check_input(user(CARD)).blocked
    assert table.policy_for(world["beta"].pk, world["beta_key"].pk) is None
    # Even a key id of another tenant does not pull acme's policy in.
    assert table.policy_for(world["beta"].pk, world["acme_key"].pk) is None


def test_each_tenant_gets_its_own_rules(world):
    make_policy(world["acme"], blocked_terms=["alpha"])
    make_policy(world["beta"], blocked_terms=["beta"])
    table = policies_load()
    acme = table.policy_for(world["acme"].pk, world["acme_key"].pk)
    beta = table.policy_for(world["beta"].pk, world["beta_key"].pk)
    assert acme.check_input(user("alpha")).blocked and not acme.check_input(user("beta")).blocked
    assert beta.check_input(user("beta")).blocked and not beta.check_input(user("alpha")).blocked


def test_a_key_policy_replaces_the_tenants_for_that_key_only(world):
    make_policy(world["acme"], detectors={"credit_card": "block"})
    make_policy(world["acme"], key=world["acme_key"], detectors={"credit_card": "redact"})
    table = policies_load()
    override = table.policy_for(world["acme"].pk, world["acme_key"].pk)
    verdict = override.check_input(user(CARD))
    assert (
        not verdict.blocked and verdict.messages[0]["content"] == "pay with [REDACTED:CREDIT_CARD]"
    )
    # The tenant's other keys, and requests without a key, keep the tenant default.
    assert (
        table.policy_for(world["acme"].pk, world["acme_other"].pk).check_input(user(CARD)).blocked
    )
    assert table.policy_for(world["acme"].pk, None).check_input(user(CARD)).blocked


def test_a_key_policy_without_rules_turns_filtering_off_for_that_key(world):
    make_policy(world["acme"], detectors={"credit_card": "block"})
    make_policy(world["acme"], key=world["acme_key"], name="no filtering")
    table = policies_load()
    assert table.policy_for(world["acme"].pk, world["acme_key"].pk) is None
    assert table.policy_for(world["acme"].pk, world["acme_other"].pk) is not None


def test_a_disabled_key_policy_falls_back_to_the_tenants(world):
    make_policy(world["acme"], detectors={"credit_card": "block"})
    make_policy(world["acme"], key=world["acme_key"], enabled=False)
    table = policies_load()
    assert table.policy_for(world["acme"].pk, world["acme_key"].pk).check_input(user(CARD)).blocked


def test_policies_of_one_scope_apply_together(world):
    make_policy(world["acme"], name="pii", detectors={"email": "redact"}, applies_to_output=False)
    make_policy(world["acme"], name="words", blocked_terms=["alpha"], applies_to_input=False)
    policy = policies_load().policy_for(world["acme"].pk, None)
    assert policy.check_input(user("jo@example.com")).redacted
    assert not policy.check_input(user("alpha")).blocked
    assert policy.filter_output_text("alpha").blocked
    assert policy.names == ("pii", "words")


def test_disabled_policies_and_inactive_tenants_are_not_loaded(world):
    make_policy(world["acme"], detectors={"email": "block"}, enabled=False)
    make_policy(world["beta"], detectors={"email": "block"})
    world["beta"].is_active = False
    world["beta"].save()
    table = policies_load()
    assert table.tenants == {} and table.keys == {}


def test_a_broken_row_is_skipped_not_fatal(world):
    make_policy(world["acme"], name="good", blocked_terms=["alpha"])
    broken = make_policy(world["acme"], name="broken")
    Policy.objects.filter(pk=broken.pk).update(regex_rules=[{"pattern": "("}])
    policy = policies_load().policy_for(world["acme"].pk, None)
    assert policy.names == ("good",)


def test_policy_list_is_tenant_scoped(world):
    a = make_policy(world["acme"])
    b = make_policy(world["beta"])
    assert list(policy_list(tenant_ids=[world["acme"].pk])) == [a]
    assert set(policy_list(tenant_ids=None)) == {a, b}


def test_changes_bump_the_config_token(world, django_capture_on_commit_callbacks):
    before = config_token(name=ROUTING)
    with django_capture_on_commit_callbacks(execute=True):
        policy = make_policy(world["acme"], blocked_terms=["alpha"])
    created = config_token(name=ROUTING)
    assert created != before
    with django_capture_on_commit_callbacks(execute=True):
        policy.name = "renamed"
        policy.save()  # a plain save (as the admin's) is watched too
    assert config_token(name=ROUTING) != created
