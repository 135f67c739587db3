"""Provider, model and deployment admin: write-only credentials, connection tests, scoping."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.core import crypto
from apps.providers import services
from apps.providers.models import Deployment, Model, Provider
from apps.providers.services import deployment_create, model_create, provider_create
from tests.conftest import free_port
from tests.providers.factories import DeploymentFactory, ModelFactory, ProviderFactory
from tests.tenants.factories import MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db

LITERAL = "sk-live-Very-Secret-credential-42"
PROVIDERS = "admin:providers_provider_changelist"
MODELS = "admin:providers_model_changelist"


def url(name: str, *args) -> str:
    return reverse(f"admin:providers_{name}", args=args)


def provider_data(**overrides) -> dict:
    data = {
        "name": "up",
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "enabled": "on",
        "credential": "",
        "options": "{}",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def raw_provider_row(pk: int) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_provider WHERE id = %s", [pk])
        return cursor.fetchone()


def credential_input(html: str) -> str:
    return re.search(r'<input[^>]*name="credential"[^>]*>', html).group(0)


def flashed(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


# --- the credential is write-only ---------------------------------------------------


def test_literal_credential_is_stored_encrypted_and_never_shown(admin_client):
    response = admin_client.post(url("provider_add"), provider_data(credential=LITERAL))
    assert response.status_code == 302
    provider = Provider.objects.get(name="up")
    row = raw_provider_row(provider.pk)
    assert all(LITERAL not in str(column) for column in row)
    assert provider.credential_encrypted in row and provider.credential_ref == ""
    assert crypto.decrypt(provider.credential_encrypted) == LITERAL
    assert provider.get_credential() == LITERAL

    for page in (url("provider_change", provider.pk), reverse(PROVIDERS)):
        html = admin_client.get(page).content.decode()
        assert LITERAL not in html
        assert provider.credential_encrypted not in html
        assert provider.credential_encrypted[:24] not in html
        assert "set (encrypted)" in html
    field = credential_input(admin_client.get(url("provider_change", provider.pk)).content.decode())
    assert 'type="password"' in field and "value=" not in field


def test_blank_credential_keeps_the_stored_one(admin_client):
    provider = provider_create(name="up", kind="openai", credential=LITERAL)
    ciphertext = provider.credential_encrypted
    response = admin_client.post(
        url("provider_change", provider.pk),
        provider_data(base_url="http://127.0.0.1:8000/v1", credential=""),
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.base_url == "http://127.0.0.1:8000/v1"
    assert provider.credential_encrypted == ciphertext
    assert provider.get_credential() == LITERAL


def test_new_literal_replaces_and_reference_is_kept_as_written(admin_client, monkeypatch):
    provider = provider_create(name="up", kind="openai", credential=LITERAL)
    admin_client.post(url("provider_change", provider.pk), provider_data(credential="sk-other-1"))
    provider.refresh_from_db()
    assert provider.get_credential() == "sk-other-1"

    monkeypatch.setenv("UP_KEY", "from-the-environment")
    admin_client.post(url("provider_change", provider.pk), provider_data(credential="env:UP_KEY"))
    provider.refresh_from_db()
    assert (provider.credential_ref, provider.credential_encrypted) == ("env:UP_KEY", "")
    assert provider.get_credential() == "from-the-environment"
    html = admin_client.get(url("provider_change", provider.pk)).content.decode()
    assert "reference: env:UP_KEY" in html
    assert "from-the-environment" not in html


def test_clear_credential(admin_client):
    provider = provider_create(name="up", kind="openai", credential=LITERAL)
    response = admin_client.post(
        url("provider_change", provider.pk), provider_data(clear_credential="on")
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert not provider.has_credential
    assert "not set" in admin_client.get(url("provider_change", provider.pk)).content.decode()


def test_form_errors_never_echo_the_credential(admin_client):
    provider = provider_create(name="up", kind="openai", credential=LITERAL)
    ciphertext = provider.credential_encrypted
    response = admin_client.post(
        url("provider_change", provider.pk),
        provider_data(credential="sk-typed-but-rejected", clear_credential="on"),
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors()
    assert "sk-typed-but-rejected" not in response.content.decode()
    response = admin_client.post(
        url("provider_change", provider.pk), provider_data(credential="env:")
    )
    assert "credential" in response.context["adminform"].form.errors
    provider.refresh_from_db()
    assert provider.credential_encrypted == ciphertext


def test_writes_go_through_services(admin_client):
    with mock.patch("apps.providers.admin.provider_create", wraps=services.provider_create) as c:
        admin_client.post(url("provider_add"), provider_data(kind="mock", credential=""))
    c.assert_called_once()
    provider = Provider.objects.get(name="up")
    with mock.patch("apps.providers.admin.provider_update", wraps=services.provider_update) as u:
        admin_client.post(url("provider_change", provider.pk), provider_data(kind="mock"))
    assert u.call_args.kwargs["credential"] is None
    with mock.patch("apps.providers.admin.provider_delete", wraps=services.provider_delete) as d:
        admin_client.post(url("provider_delete", provider.pk), {"post": "yes"})
    d.assert_called_once()
    assert not Provider.objects.exists()


def test_kind_choices_come_from_the_adapter_registry(admin_client):
    from apps.providers.adapters import registry

    form = admin_client.get(url("provider_add")).context["adminform"].form
    assert [value for value, _ in form.fields["kind"].choices if value] == registry.kinds()


def test_provider_serving_deployments_is_not_deleted(admin_client):
    deployment = DeploymentFactory()
    response = admin_client.post(url("provider_delete", deployment.provider.pk), {"post": "yes"})
    assert response.status_code == 200  # Django's "cannot delete: protected" page
    assert Provider.objects.filter(pk=deployment.provider.pk).exists()


# --- test connection ---------------------------------------------------------------


def run_test_action(client, *providers):
    return client.post(
        reverse(PROVIDERS),
        {"action": "test_connection", "_selected_action": [p.pk for p in providers]},
        follow=True,
    )


def test_test_connection_on_the_mock_provider(admin_client):
    provider = provider_create(name="builtin", kind="mock")
    with mock.patch(
        "apps.providers.admin.provider_test_connection", wraps=services.provider_test_connection
    ) as tested:
        response = run_test_action(admin_client, provider)
    tested.assert_called_once()
    assert flashed(response) == [
        ("success", "Connection to builtin: ok: the mock provider is built in")
    ]
    provider.refresh_from_db()
    assert provider.last_check_ok is True and provider.last_check_at is not None
    assert '<span class="gw-badge gw-badge--ok">ok</span>' in response.content.decode()


def test_test_connection_reports_each_provider(admin_client, fake_openai):
    good = provider_create(
        name="fake", kind="openai", base_url=fake_openai.base_url, credential=fake_openai.api_key
    )
    wrong_key = provider_create(
        name="wrong-key", kind="openai", base_url=fake_openai.base_url, credential="sk-nope"
    )
    closed = provider_create(
        name="closed", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", credential="x"
    )
    response = run_test_action(admin_client, good, wrong_key, closed)
    messages = dict((text.split(":", 1)[0], (level, text)) for level, text in flashed(response))
    assert messages["Connection to fake"] == (
        "success",
        "Connection to fake: ok: 1 model(s) available",
    )
    assert messages["Connection to wrong-key"][0] == "error"
    assert (
        "401" in messages["Connection to wrong-key"][1]
        or "API key" in messages["Connection to wrong-key"][1]
    )
    assert messages["Connection to closed"] == (
        "error",
        "Connection to closed: cannot connect to provider closed",
    )
    states = dict(Provider.objects.values_list("name", "last_check_ok"))
    assert states == {"fake": True, "wrong-key": False, "closed": False}
    html = response.content.decode()
    assert '<span class="gw-badge gw-badge--bad">failed</span>' in html
    assert fake_openai.api_key not in html


def test_test_connection_button_on_the_change_page(admin_client):
    provider = provider_create(name="builtin", kind="mock")
    page = admin_client.get(url("provider_change", provider.pk)).content.decode()
    button_url = url("provider_test_connection", provider.pk)
    assert f'action="{button_url}"' in page
    assert admin_client.get(button_url).status_code == 405
    response = admin_client.post(button_url, follow=True)
    assert response.redirect_chain[-1][0] == url("provider_change", provider.pk)
    assert flashed(response) == [
        ("success", "Connection to builtin: ok: the mock provider is built in")
    ]


# --- models and their deployments -------------------------------------------------------


def model_data(provider: Provider | None = None, **overrides) -> dict:
    data = {
        "name": "gpt-4o-mini",
        "description": "",
        "mode": "chat",
        "enabled": "on",
        "input_price_per_million": "0.15",
        "output_price_per_million": "0.60",
        "fallbacks": "",
        "timeout_s": "",
        "retries": "",
        "context_window": "",
        "max_output_tokens": "",
        "deployments-TOTAL_FORMS": "1" if provider else "0",
        "deployments-INITIAL_FORMS": "0",
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    if provider:
        data.update(
            {
                "deployments-0-provider": provider.pk,
                "deployments-0-upstream_model": "gpt-4o-mini-2024",
                "deployments-0-weight": "3",
                "deployments-0-priority": "0",
                "deployments-0-enabled": "on",
            }
        )
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_model_with_an_inline_deployment(admin_client):
    provider = provider_create(name="builtin", kind="mock")
    with (
        mock.patch("apps.providers.admin.model_create", wraps=services.model_create) as mc,
        mock.patch(
            "apps.providers.admin.deployment_create", wraps=services.deployment_create
        ) as dc,
    ):
        response = admin_client.post(
            url("model_add"), model_data(provider, fallbacks="claude-haiku, gpt-4o")
        )
    assert response.status_code == 302, response.context["adminform"].form.errors
    mc.assert_called_once()
    dc.assert_called_once()
    model = Model.objects.get(name="gpt-4o-mini")
    assert model.fallbacks == ["claude-haiku", "gpt-4o"]
    deployment = model.deployments.get()
    assert (deployment.provider, deployment.upstream_model, deployment.weight) == (
        provider,
        "gpt-4o-mini-2024",
        3,
    )

    # Change the weight of the existing row, delete nothing, add nothing.
    edit = model_data(
        None,
        fallbacks="",
        **{
            "deployments-TOTAL_FORMS": "1",
            "deployments-INITIAL_FORMS": "1",
            "deployments-0-id": deployment.pk,
            "deployments-0-model": model.pk,
            "deployments-0-upstream_model": "gpt-4o-mini-2024",
            "deployments-0-weight": "7",
            "deployments-0-priority": "1",
            "deployments-0-enabled": "on",
        },
    )
    with mock.patch(
        "apps.providers.admin.deployment_update", wraps=services.deployment_update
    ) as du:
        response = admin_client.post(url("model_change", model.pk), edit)
    assert response.status_code == 302
    du.assert_called_once()
    deployment.refresh_from_db()
    assert (deployment.weight, deployment.priority, deployment.provider) == (7, 1, provider)

    edit["deployments-0-DELETE"] = "on"
    admin_client.post(url("model_change", model.pk), edit)
    assert not Deployment.objects.exists()


def test_a_tenants_provider_cannot_serve_another_tenants_model(admin_client):
    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    provider_of_a = provider_create(name="a-up", kind="mock", tenant=a)
    response = admin_client.post(url("model_add"), model_data(provider_of_a, tenant=b.pk))
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.errors[0]["provider"]
    assert not Model.objects.exists() and not Deployment.objects.exists()


def test_model_and_provider_lists_do_not_query_per_row(admin_client):
    def count(name: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(reverse(name)).status_code == 200
        return len(queries)

    DeploymentFactory(model__tenant=TenantFactory(), provider__tenant=None)
    few = count(PROVIDERS), count(MODELS), count("admin:providers_deployment_changelist")
    for _ in range(6):
        DeploymentFactory(model__tenant=TenantFactory(), provider__tenant=None)
    assert (
        count(PROVIDERS),
        count(MODELS),
        count("admin:providers_deployment_changelist"),
    ) == few


# --- tenant scoping ---------------------------------------------------------------


@pytest.fixture
def scoped(client):
    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    user = MembershipFactory(tenant=b, user__username="b_admin").user
    client.force_login(user)
    return a, b


def test_tenant_staff_see_their_own_and_platform_objects_only(client, scoped):
    a, b = scoped
    mine = provider_create(name="b-up", kind="mock", tenant=b)
    theirs = provider_create(name="a-up", kind="openai", tenant=a, credential=LITERAL)
    platform = provider_create(name="shared", kind="mock", base_url="http://10.0.0.1/v1")
    response = client.get(reverse(PROVIDERS))
    assert response.status_code == 200
    assert {p.pk for p in response.context["cl"].result_list} == {mine.pk, platform.pk}
    assert "a-up" not in response.content.decode()
    assert "10.0.0.1" not in response.content.decode()  # platform endpoints stay private

    model_a = model_create(name="a-model", tenant=a)
    model_b = model_create(name="b-model", tenant=b)
    shared = model_create(name="shared-model")
    response = client.get(reverse(MODELS))
    assert {m.pk for m in response.context["cl"].result_list} == {model_b.pk, shared.pk}
    assert theirs.pk and model_a.pk


def test_tenant_staff_cannot_touch_other_tenants_providers(client, scoped):
    a, _b = scoped
    provider = provider_create(name="a-up", kind="mock", tenant=a)
    before = raw_provider_row(provider.pk)
    assert client.get(url("provider_change", provider.pk)).status_code == 302
    client.post(url("provider_change", provider.pk), provider_data(name="stolen", kind="mock"))
    client.post(url("provider_delete", provider.pk), {"post": "yes"})
    assert client.post(url("provider_test_connection", provider.pk)).status_code == 302
    run_test_action(client, provider)
    assert raw_provider_row(provider.pk) == before


def test_tenant_staff_cannot_touch_other_tenants_models(client, scoped):
    a, _b = scoped
    model = model_create(name="a-model", tenant=a)
    deployment = deployment_create(
        model=model, provider=ProviderFactory(tenant=a), upstream_model="x"
    )
    assert client.get(url("model_change", model.pk)).status_code == 302
    client.post(url("model_change", model.pk), model_data(name="stolen"))
    client.post(url("model_delete", model.pk), {"post": "yes"})
    client.post(
        reverse(MODELS),
        {"action": "delete_selected", "_selected_action": [model.pk], "post": "yes"},
    )
    assert client.get(url("deployment_change", deployment.pk)).status_code == 302
    client.post(url("deployment_delete", deployment.pk), {"post": "yes"})
    model.refresh_from_db()
    assert model.name == "a-model" and Deployment.objects.filter(pk=deployment.pk).exists()


def test_platform_objects_are_read_only_for_tenant_staff(client, scoped):
    platform = provider_create(
        name="shared", kind="openai", base_url="http://10.0.0.1/v1", credential=LITERAL
    )
    page = client.get(url("provider_change", platform.pk))
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    html = page.content.decode()
    assert LITERAL not in html and platform.credential_encrypted not in html
    assert "10.0.0.1" not in html
    assert 'name="credential"' not in html and "gw-test-connection" not in html
    assert client.post(url("provider_change", platform.pk), provider_data()).status_code == 403
    assert client.post(url("provider_delete", platform.pk), {"post": "yes"}).status_code == 403
    assert client.post(url("provider_test_connection", platform.pk)).status_code == 403
    assert flashed(run_test_action(client, platform))[0][0] == "error"
    platform.refresh_from_db()
    assert platform.last_check_at is None

    shared = model_create(name="shared-model")
    assert client.get(url("model_change", shared.pk)).status_code == 200
    assert client.post(url("model_change", shared.pk), model_data(name="x")).status_code == 403
    shared.refresh_from_db()
    assert shared.name == "shared-model"


def test_tenant_staff_form_choices_exclude_other_tenants(client, scoped):
    a, b = scoped
    provider_create(name="a-up", kind="mock", tenant=a)
    mine = provider_create(name="b-up", kind="mock", tenant=b)
    shared = provider_create(name="shared", kind="mock")

    form = client.get(url("provider_add")).context["adminform"].form
    assert list(form.fields["tenant"].queryset) == [b]
    assert form.fields["tenant"].required  # no platform providers from tenant staff

    page = client.get(url("model_add"))
    assert list(page.context["adminform"].form.fields["tenant"].queryset) == [b]
    inline_form = page.context["inline_admin_formsets"][0].formset.empty_form
    assert set(inline_form.fields["provider"].queryset) == {mine, shared}

    form = client.get(url("deployment_add")).context["adminform"].form
    assert set(form.fields["provider"].queryset) == {mine, shared}
    model_create(name="a-model", tenant=a)
    model_b = model_create(name="b-model", tenant=b)
    form = client.get(url("deployment_add")).context["adminform"].form
    assert list(form.fields["model"].queryset) == [model_b]


def test_tenant_staff_create_providers_and_models_for_their_tenant(client, scoped):
    a, b = scoped
    response = client.post(url("provider_add"), provider_data(name="sneaky", tenant=a.pk))
    assert response.status_code == 200
    assert not Provider.objects.filter(name="sneaky").exists()
    response = client.post(url("provider_add"), provider_data(name="platformish", tenant=""))
    assert "tenant" in response.context["adminform"].form.errors

    response = client.post(
        url("provider_add"), provider_data(name="mine", kind="mock", tenant=b.pk)
    )
    assert response.status_code == 302
    mine = Provider.objects.get(name="mine")
    assert mine.tenant == b

    response = client.post(url("model_add"), model_data(mine, tenant=b.pk))
    assert response.status_code == 302
    model = Model.objects.get(name="gpt-4o-mini")
    assert model.tenant == b and model.deployments.get().provider == mine
    # A provider of another tenant is not even a valid choice.
    theirs = provider_create(name="a-up", kind="mock", tenant=a)
    response = client.post(url("model_add"), model_data(theirs, name="m2", tenant=b.pk))
    assert response.status_code == 200
    assert not Model.objects.filter(name="m2").exists()


def test_unrelated_models_listed_for_superusers_only(admin_client, client, scoped):
    ModelFactory(tenant=scoped[0])
    assert len(admin_client.get(reverse(MODELS)).context["cl"].result_list) == 1
    assert len(client.get(reverse(MODELS)).context["cl"].result_list) == 0
