"""Tenant and membership admin, and who may use the admin at all."""

from __future__ import annotations

from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.tenants import services
from apps.tenants.models import Membership, Role, Tenant
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

TENANTS = "admin:tenants_tenant_changelist"
MEMBERSHIPS = "admin:tenants_membership_changelist"


def url(name: str, *args) -> str:
    return reverse(f"admin:tenants_{name}", args=args)


def tenant_data(**overrides) -> dict:
    data = {
        "name": "acme",
        "display_name": "Acme Inc.",
        "is_active": "on",
        "budget_limit_usd": "",
        "budget_period": "monthly",
        "metadata": "{}",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_site_is_branded(admin_client, client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert '<a href="/admin/">LLM Gateway</a>' in html
    assert "<title>Control plane | LLM Gateway</title>" in html
    assert "admin-extra/admin.css" in html
    assert "LLM Gateway" in client.get(reverse("admin:login")).content.decode()


# --- platform admins ------------------------------------------------------------------


def test_create_tenant_with_members_through_services(admin_client):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    data = tenant_data(
        budget_limit_usd="100",
        **{
            "memberships-TOTAL_FORMS": "2",
            "memberships-0-user": alice.pk,
            "memberships-0-role": Role.OWNER,
            "memberships-1-user": bob.pk,
            "memberships-1-role": Role.VIEWER,
        },
    )
    with (
        mock.patch("apps.tenants.admin.tenant_create", wraps=services.tenant_create) as create,
        mock.patch("apps.tenants.admin.membership_set", wraps=services.membership_set) as member,
    ):
        response = admin_client.post(url("tenant_add"), data)
    assert response.status_code == 302
    create.assert_called_once()
    assert member.call_count == 2
    tenant = Tenant.objects.get(name="acme")
    assert tenant.budget_limit_usd == Decimal("100")
    assert dict(tenant.memberships.values_list("user__username", "role")) == {
        "alice": Role.OWNER,
        "bob": Role.VIEWER,
    }


def test_change_tenant_roles_and_remove_members(admin_client):
    tenant = TenantFactory(name="acme")
    owner = MembershipFactory(tenant=tenant, role=Role.OWNER)
    leaving = MembershipFactory(tenant=tenant, role=Role.MEMBER)
    page = admin_client.get(url("tenant_change", tenant.pk))
    assert "name" not in page.context["adminform"].form.fields  # the stable identifier
    data = tenant_data(
        display_name="Acme Renamed",
        **{
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "2",
            "memberships-0-id": owner.pk,
            "memberships-0-tenant": tenant.pk,
            "memberships-0-role": Role.ADMIN,
            "memberships-1-id": leaving.pk,
            "memberships-1-tenant": tenant.pk,
            "memberships-1-role": Role.MEMBER,
            "memberships-1-DELETE": "on",
        },
    )
    with (
        mock.patch("apps.tenants.admin.tenant_update", wraps=services.tenant_update) as update,
        mock.patch(
            "apps.tenants.admin.membership_delete", wraps=services.membership_delete
        ) as delete,
    ):
        response = admin_client.post(url("tenant_change", tenant.pk), data)
    assert response.status_code == 302
    update.assert_called_once()
    delete.assert_called_once()
    tenant.refresh_from_db()
    assert tenant.display_name == "Acme Renamed" and tenant.name == "acme"
    assert list(tenant.memberships.values_list("user_id", "role")) == [(owner.user_id, Role.ADMIN)]


def test_tenant_list_counts_without_queries_per_row(admin_client):
    def count() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(reverse(TENANTS))
        return len(queries), response.content.decode()

    tenant = TenantFactory(name="acme")
    MembershipFactory(tenant=tenant)
    MembershipFactory(tenant=tenant)
    for _ in range(3):
        make_key(tenant)
    few, html = count()
    assert '<td class="field-member_count">2</td>' in html
    assert '<td class="field-key_count">3</td>' in html
    for _ in range(6):
        MembershipFactory(tenant=TenantFactory())
    assert count()[0] == few


# --- who may use the admin ----------------------------------------------------------------


def test_tenant_staff_use_the_admin_through_membership_alone(client):
    tenant = TenantFactory(name="acme")
    user = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    assert user.is_staff and not user.is_superuser
    assert user.get_all_permissions() == set()
    client.force_login(user)
    html = client.get(reverse("admin:index")).content.decode()
    for changelist in (
        "admin:keys_apikey_changelist",
        "admin:providers_provider_changelist",
        "admin:providers_model_changelist",
        "admin:tenants_tenant_changelist",
    ):
        assert f'href="{reverse(changelist)}"' in html
        assert client.get(reverse(changelist)).status_code == 200
    # Nothing of Django's own: users and groups need real permissions.
    assert reverse("admin:auth_user_changelist") not in html
    assert reverse("admin:core_configstate_changelist") not in html
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_staff_without_membership_see_nothing(client):
    TenantFactory(name="acme")
    client.force_login(UserFactory(username="loner"))
    html = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:keys_apikey_changelist") not in html
    assert client.get(reverse("admin:keys_apikey_changelist")).status_code == 403
    assert client.get(reverse(TENANTS)).status_code == 403


def test_members_who_are_not_staff_are_sent_to_login(client):
    user = MembershipFactory(user__is_staff=False).user
    client.force_login(user)
    response = client.get(reverse("admin:keys_apikey_changelist"))
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]


def test_members_of_a_disabled_tenant_lose_access(client):
    membership = MembershipFactory(tenant=TenantFactory(name="acme", is_active=False))
    client.force_login(membership.user)
    assert client.get(reverse("admin:keys_apikey_changelist")).status_code == 403


# --- tenant scoping ---------------------------------------------------------------


@pytest.fixture
def scoped(client):
    a, b = TenantFactory(name="tenant-a"), TenantFactory(name="tenant-b")
    a_member = MembershipFactory(tenant=a, user__username="a_only")
    b_admin = MembershipFactory(tenant=b, user__username="b_admin", role=Role.ADMIN)
    b_member = MembershipFactory(tenant=b, user__username="b_member", role=Role.MEMBER)
    client.force_login(b_admin.user)
    return a, b, a_member, b_member


def test_tenant_staff_see_only_their_tenant(client, scoped):
    a, b, *_ = scoped
    response = client.get(reverse(TENANTS))
    assert [t.pk for t in response.context["cl"].result_list] == [b.pk]
    assert client.get(url("tenant_change", a.pk)).status_code == 302
    client.post(url("tenant_change", a.pk), tenant_data(name="tenant-a", display_name="Pwned"))
    client.post(url("tenant_delete", a.pk), {"post": "yes"})
    a.refresh_from_db()
    assert a.display_name == "Tenant-A"


def test_tenant_admins_cannot_create_delete_or_rebudget_tenants(client, scoped):
    _a, b, *_ = scoped
    assert client.get(url("tenant_add")).status_code == 403
    assert client.post(url("tenant_add"), tenant_data(name="new")).status_code == 403
    assert client.post(url("tenant_delete", b.pk), {"post": "yes"}).status_code == 403
    form = client.get(url("tenant_change", b.pk)).context["adminform"].form
    assert {"name", "is_active", "budget_limit_usd", "budget_period"}.isdisjoint(form.fields)
    response = client.post(
        url("tenant_change", b.pk),
        tenant_data(
            name="renamed", display_name="B Team", is_active="", budget_limit_usd="1000000"
        ),
    )
    assert response.status_code == 302
    b.refresh_from_db()
    assert (b.name, b.display_name, b.is_active, b.budget_limit_usd) == (
        "tenant-b",
        "B Team",
        True,
        None,
    )
    assert Tenant.objects.filter(name="new").count() == 0


def test_tenant_staff_see_and_assign_only_their_memberships(client, scoped):
    a, b, a_member, b_member = scoped
    response = client.get(reverse(MEMBERSHIPS))
    assert {m.tenant_id for m in response.context["cl"].result_list} == {b.pk}
    assert client.get(url("membership_change", a_member.pk)).status_code == 302

    form = client.get(url("membership_add")).context["adminform"].form
    assert list(form.fields["tenant"].queryset) == [b]
    assert a_member.user not in form.fields["user"].queryset
    assert b_member.user in form.fields["user"].queryset

    response = client.post(
        url("membership_add"), {"user": b_member.user.pk, "tenant": a.pk, "role": Role.OWNER}
    )
    assert response.status_code == 200
    response = client.post(
        url("membership_add"), {"user": a_member.user.pk, "tenant": b.pk, "role": Role.OWNER}
    )
    assert response.status_code == 200
    assert not Membership.objects.filter(tenant=a, user=b_member.user).exists()
    assert not Membership.objects.filter(tenant=b, user=a_member.user).exists()

    inline = client.get(url("tenant_change", b.pk)).context["inline_admin_formsets"][0]
    assert a_member.user not in inline.formset.empty_form.fields["user"].queryset


def test_viewers_cannot_change_their_tenant(client):
    tenant = TenantFactory(name="acme")
    client.force_login(MembershipFactory(tenant=tenant, role=Role.VIEWER).user)
    page = client.get(url("tenant_change", tenant.pk))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    response = client.post(url("tenant_change", tenant.pk), tenant_data(display_name="x"))
    assert response.status_code == 403
    tenant.refresh_from_db()
    assert tenant.display_name == "Acme"


def test_platform_admin_deletes_a_tenant_with_everything_it_owns(admin_client):
    from apps.providers.models import Deployment, Provider
    from apps.providers.services import deployment_create, model_create, provider_create

    tenant = TenantFactory(name="acme")
    MembershipFactory(tenant=tenant)
    make_key(tenant)
    provider = provider_create(name="own", kind="mock", tenant=tenant)
    deployment_create(
        model=model_create(name="own-model", tenant=tenant), provider=provider, upstream_model="x"
    )
    confirm = admin_client.get(url("tenant_delete", tenant.pk))
    assert not confirm.context["protected"]
    with mock.patch("apps.tenants.admin.tenant_delete", wraps=services.tenant_delete) as delete:
        response = admin_client.post(url("tenant_delete", tenant.pk), {"post": "yes"})
    assert response.status_code == 302
    delete.assert_called_once()
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert not Deployment.objects.exists()
