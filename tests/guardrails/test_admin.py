"""The policy editor and its Try it box, for platform admins and tenant staff."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.guardrails.models import Policy
from tests.guardrails.factories import make_policy
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


def url(action: str = "changelist", *args) -> str:
    return reverse(f"admin:guardrails_policy_{action}", args=args)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    acme_key = make_key(acme, name="acme-app").key
    acme_policy = make_policy(
        acme,
        name="acme-pii",
        detectors={"email": "redact", "credit_card": "block"},
        blocked_terms=["project falcon"],
        regex_rules=[{"pattern": r"\bPRJ-\d{4}\b", "action": "flag", "label": "project"}],
    )
    beta_policy = make_policy(beta, name="beta-words", blocked_terms=["beta-secret"])
    staff = UserFactory(username="acme-admin")
    MembershipFactory(user=staff, tenant=acme, role="admin")
    viewer = UserFactory(username="acme-viewer")
    MembershipFactory(user=viewer, tenant=acme, role="viewer")
    return {
        "acme": acme,
        "beta": beta,
        "acme_key": acme_key,
        "acme_policy": acme_policy,
        "beta_policy": beta_policy,
        "staff": staff,
        "viewer": viewer,
    }


def form_data(policy: Policy | None = None, **overrides) -> dict:
    """What the editor posts: lists as lines, one select per detector."""
    data = {
        "name": "edited",
        "description": "",
        "key": "",
        "enabled": "on",
        "applies_to_input": "on",
        "applies_to_output": "on",
        "blocked_terms": "project falcon\nnightingale",
        "blocked_terms_action": "block",
        "regex_rules": r"flag | project | \bPRJ-\d{4}\b",
        "detectors": "{}",
        "detector_email": "redact",
        "detector_phone": "",
        "detector_credit_card": "block",
        "detector_iban": "",
        "detector_us_ssn": "",
        "detector_secret_token": "",
    }
    if policy is None:
        data["tenant"] = ""
    data.update(overrides)
    return data


def test_changelist_for_superusers(world, admin_client):
    response = admin_client.get(url())
    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    html = response.content.decode()
    assert "email: redact, credit_card: block; 1 term(s): block; 1 regex rule(s)" in html
    assert admin_client.get(url(), {"tenant": world["beta"].pk}).context["cl"].result_count == 1
    assert admin_client.get(url(), {"scope": "key"}).context["cl"].result_count == 0
    assert admin_client.get(url(), {"q": "falcon"}).status_code == 200


def test_editor_renders_friendly_fields(world, admin_client):
    response = admin_client.get(url("change", world["acme_policy"].pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert ">\nproject falcon</textarea>" in html  # one term per line
    assert "\nflag | PROJECT | \\bPRJ-\\d{4}\\b</textarea>" in html  # one rule per line
    form = response.context["adminform"].form
    assert form["detector_email"].value() == "redact"
    assert form["detector_phone"].value() == ""
    assert 'id="gw-try-it"' in html and 'name="_gw_try_text"' in html
    assert "guardrails/policy.css" in html


def test_add_through_the_editor(world, admin_client):
    data = form_data(tenant=world["acme"].pk, name="new", key=world["acme_key"].pk, _save="Save")
    response = admin_client.post(url("add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    policy = Policy.objects.get(name="new")
    assert policy.key == world["acme_key"]
    assert policy.blocked_terms == ["project falcon", "nightingale"]
    assert policy.regex_rules == [
        {"action": "flag", "label": "PROJECT", "pattern": r"\bPRJ-\d{4}\b"}
    ]
    assert policy.detectors == {"email": "redact", "credit_card": "block"}


def test_invalid_regex_is_shown_on_its_field(world, admin_client):
    data = form_data(world["acme_policy"], regex_rules="block | x | (a+)+", _save="Save")
    response = admin_client.post(url("change", world["acme_policy"].pk), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "regex_rules" in errors and "exponential" in errors["regex_rules"][0]
    data = form_data(world["acme_policy"], regex_rules="just a pattern", _save="Save")
    response = admin_client.post(url("change", world["acme_policy"].pk), data)
    assert "action | LABEL | pattern" in response.context["adminform"].form.errors["regex_rules"][0]


def test_try_it_computes_the_verdict_for_unsaved_edits(world, admin_client):
    policy = world["acme_policy"]
    text = "Mail <b>jo@example.com</b> about PRJ-1234 & nightingale"
    data = form_data(policy, _gw_try="Try it", _gw_try_text=text)
    response = admin_client.post(url("change", policy.pk), data)
    assert response.status_code == 200
    result = response.context["try_it"]
    # "nightingale" is only in the form, not saved: the edits are what is tried.
    assert result["input"]["state"] == "blocked"
    assert result["output"]["state"] == "blocked"
    assert result["output"]["text"] == "Mail <b>[REDACTED:EMAIL]</b> about PRJ-1234 & "
    assert result["output"]["flags"] == ("PROJECT",)
    html = response.content.decode()
    assert "Mail &lt;b&gt;[REDACTED:EMAIL]&lt;/b&gt; about PRJ-1234 &amp; </pre>" in html
    assert "<b>jo@" not in html  # escaped, never rendered as markup
    assert "content_filter" in html and "content_policy_violation" in html
    # Nothing was saved, and the form kept the edits.
    policy.refresh_from_db()
    assert policy.name == "acme-pii" and policy.blocked_terms == ["project falcon"]
    assert response.context["adminform"].form["name"].value() == "edited"


def test_try_it_redacts_and_flags(world, admin_client):
    policy = world["acme_policy"]
    data = form_data(policy, _gw_try="Try it", _gw_try_text="jo@example.com PRJ-1234")
    result = admin_client.post(url("change", policy.pk), data).context["try_it"]
    assert result["input"]["state"] == "redacted"
    assert result["input"]["text"] == "[REDACTED:EMAIL] PRJ-1234"
    assert result["input"]["redactions"] == ("EMAIL",)
    assert result["input"]["flags"] == ("PROJECT",)
    data = form_data(policy, _gw_try="Try it", _gw_try_text="all clear")
    result = admin_client.post(url("change", policy.pk), data).context["try_it"]
    assert result["input"]["state"] == result["output"]["state"] == "clean"


def test_try_it_with_invalid_edits_asks_to_fix_them(world, admin_client):
    policy = world["acme_policy"]
    data = form_data(policy, regex_rules="block | x | (", _gw_try="Try it", _gw_try_text="hi")
    response = admin_client.post(url("change", policy.pk), data)
    assert response.status_code == 200
    assert "Fix the errors" in response.context["try_it"]["error"]
    assert "regex_rules" in response.context["adminform"].form.errors


def test_try_it_on_the_add_page(world, admin_client):
    data = form_data(tenant=world["acme"].pk, _gw_try="Try it", _gw_try_text="4111 1111 1111 1111")
    response = admin_client.post(url("add"), data)
    assert response.status_code == 200
    assert response.context["try_it"]["input"]["state"] == "blocked"
    assert not Policy.objects.filter(name="edited").exists()


def test_tenant_staff_see_and_edit_their_tenant_only(world, client):
    client.force_login(world["staff"])
    response = client.get(url())
    assert response.status_code == 200
    assert [p.name for p in response.context["cl"].result_list] == ["acme-pii"]
    assert "beta-words" not in response.content.decode()
    assert client.get(url("change", world["beta_policy"].pk)).status_code == 302
    # Trying another tenant's policy finds nothing either.
    data = form_data(world["beta_policy"], _gw_try="Try it", _gw_try_text="beta-secret")
    response = client.post(url("change", world["beta_policy"].pk), data)
    assert response.status_code == 302 and "try_it" not in (response.context or {})
    # Their own: the editor and the box work.
    data = form_data(world["acme_policy"], _gw_try="Try it", _gw_try_text="jo@example.com")
    response = client.post(url("change", world["acme_policy"].pk), data)
    assert response.context["try_it"]["input"]["state"] == "redacted"
    # The tenant and key choices are theirs only.
    form = client.get(url("add")).context["adminform"].form
    assert list(form.fields["tenant"].queryset) == [world["acme"]]
    assert set(form.fields["key"].queryset) == {world["acme_key"]}


def test_tenant_staff_cannot_create_for_another_tenant(world, client):
    client.force_login(world["staff"])
    data = form_data(tenant=world["beta"].pk, name="sneaky", _save="Save")
    response = client.post(url("add"), data)
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert not Policy.objects.filter(name="sneaky").exists()


def test_viewers_see_a_read_only_policy_and_can_try_the_saved_one(world, client):
    client.force_login(world["viewer"])
    page = client.get(url("change", world["acme_policy"].pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert "email: redact, credit_card: block" in html
    assert "project falcon (block)" in html
    response = client.post(
        url("change", world["acme_policy"].pk),
        {"_gw_try": "Try it", "_gw_try_text": "project falcon", "name": "ignored"},
    )
    assert response.status_code == 200
    assert response.context["try_it"]["input"]["state"] == "blocked"
    assert client.post(url("change", world["acme_policy"].pk), {"_save": "Save"}).status_code == 403


def test_actions_enable_and_disable(world, admin_client):
    pk = world["acme_policy"].pk
    admin_client.post(url(), {"action": "disable_policies", "_selected_action": [pk]})
    assert Policy.objects.get(pk=pk).enabled is False
    admin_client.post(url(), {"action": "enable_policies", "_selected_action": [pk]})
    assert Policy.objects.get(pk=pk).enabled is True


def test_delete_goes_through_the_service(world, admin_client):
    pk = world["beta_policy"].pk
    response = admin_client.post(url("delete", pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Policy.objects.filter(pk=pk).exists()
