"""The audit log in the admin: tenant staff see their tenants' events only; filters work."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.providers.services import provider_create
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:audit_auditevent_changelist"


@pytest.fixture
def world():
    acme, globex = TenantFactory(name="acme"), TenantFactory(name="globex")
    make_key(acme, name="acme-key")
    make_key(globex, name="globex-key")
    provider_create(name="platform-mock", kind="mock")
    return acme, globex


def listed(client, **params) -> set[str]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {e.object_repr for e in response.context["cl"].result_list}


def test_tenant_staff_see_their_tenant_only(client, world):
    acme, _ = world
    viewer = UserFactory(username="acme-viewer")
    MembershipFactory(user=viewer, tenant=acme, role="viewer")
    client.force_login(viewer)
    seen = listed(client)
    assert seen and all("globex" not in r and r != "platform-mock" for r in seen)
    assert any(r.startswith("acme-key") for r in seen)
    other = AuditEvent.objects.get(object_type="keys.apikey", tenant__name="globex")
    detail = reverse("admin:audit_auditevent_change", args=[other.pk])
    assert client.get(detail).status_code in (302, 403, 404)


def test_staff_without_membership_see_nothing(client, world):
    client.force_login(UserFactory(username="loner"))
    assert client.get(reverse(CHANGELIST)).status_code == 403


def test_filters_and_search(admin_client, world):
    acme, _ = world
    assert listed(admin_client, object_type="providers.provider") == {"platform-mock"}
    assert listed(admin_client, source="system", action="create") >= {"Acme", "platform-mock"}
    by_tenant = listed(admin_client, tenant__id__exact=acme.pk)
    assert by_tenant and all("globex" not in r for r in by_tenant)
    assert listed(admin_client, q="globex-key") == {
        e.object_repr for e in AuditEvent.objects.filter(object_repr__startswith="globex-key")
    }
    detail = admin_client.get(
        reverse(
            "admin:audit_auditevent_change",
            args=[AuditEvent.objects.get(object_type="providers.provider").pk],
        )
    )
    assert detail.status_code == 200
    assert "gw-audit-changes" in detail.content.decode()
