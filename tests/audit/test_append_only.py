"""Audit events cannot be changed or removed: not through the ORM, the admin, or SQL.

Runs on whichever database is configured. On PostgreSQL a trigger refuses UPDATE and
DELETE; on SQLite a trigger refuses UPDATE (DELETE stays open there: Django's flush
empties SQLite tables with DELETE, see migration 0002).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from apps.audit.models import AppendOnlyError, AuditEvent
from apps.tenants.services import tenant_delete
from tests.tenants.factories import TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def event() -> AuditEvent:
    TenantFactory(name="acme")
    return AuditEvent.objects.get(object_type="tenants.tenant", action="create")


def table() -> str:
    return connection.ops.quote_name(AuditEvent._meta.db_table)


def stored(pk: int) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT actor, action, object_repr FROM {table()} WHERE id = %s", [pk])
        return cursor.fetchone()


def test_the_orm_refuses_changes_and_deletes(event):
    event.actor = "mallory"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(actor="mallory")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert stored(event.pk) == ("system", "create", "Acme")


def test_raw_sql_update_is_refused_by_the_database(event):
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table()} SET actor = 'mallory' WHERE id = %s", [event.pk])
    assert stored(event.pk) == ("system", "create", "Acme")


def test_raw_sql_delete_is_refused_by_the_database(event):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps DELETE for Django's flush; the ORM still refuses it")
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table()} WHERE id = %s", [event.pk])
    assert stored(event.pk) == ("system", "create", "Acme")


def test_only_set_null_of_a_deleted_tenant_or_user_gets_through(event):
    """The one update the triggers allow is the one on_delete=SET_NULL makes."""
    user = UserFactory(username="gone")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table()} SET tenant_id = NULL, actor_user_id = NULL WHERE id = %s",
            [event.pk],
        )
    # ...but not together with anything else, nor pointing the row at another tenant.
    other = TenantFactory(name="other")
    for sql, params in (
        (f"UPDATE {table()} SET tenant_id = NULL, actor = 'x' WHERE id = %s", [event.pk]),
        (f"UPDATE {table()} SET tenant_id = %s WHERE id = %s", [other.pk, event.pk]),
        (f"UPDATE {table()} SET actor_user_id = %s WHERE id = %s", [user.pk, event.pk]),
    ):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    assert stored(event.pk) == ("system", "create", "Acme")


def test_deleting_the_tenant_or_the_acting_user_keeps_the_events(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-0123456789")
    client.force_login(user)
    tenant = TenantFactory(name="acme")
    response = client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        {
            "display_name": "Acme Corp",
            "is_active": "on",
            "budget_limit_usd": "",
            "budget_period": "monthly",
            "metadata": "{}",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content
    update = AuditEvent.objects.get(action="update", object_type="tenants.tenant")
    assert (update.actor_user_id, update.tenant_id) == (user.pk, tenant.pk)

    tenant_delete(tenant=tenant)
    client.logout()
    user.delete()

    update = AuditEvent.objects.get(pk=update.pk)
    assert (update.actor, update.actor_user_id) == ("root", None)
    assert (update.tenant_id, update.tenant_name) == (None, "acme")
    assert update.changes == {"display_name": ["Acme", "Acme Corp"]}
    assert AuditEvent.objects.filter(tenant_name="acme").count() == 3  # create, update, delete


def test_the_admin_is_read_only_for_everyone(admin_client, event):
    changelist = reverse("admin:audit_auditevent_changelist")
    page = admin_client.get(changelist)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Acme" in html and reverse("admin:audit_auditevent_add") not in html
    assert 'name="action"' not in html  # no "delete selected"
    view = admin_client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    delete = reverse("admin:audit_auditevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
