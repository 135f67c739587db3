"""A key's secret exists only in the creation response: the database keeps a hash."""

from __future__ import annotations

import hashlib

import pytest
from django.db import connection

from apps.keys.models import ApiKey
from apps.keys.selectors import key_get_by_secret
from apps.keys.services import key_create
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db


def table_dump(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return repr(cursor.fetchall())


def test_plaintext_secret_is_nowhere_in_the_table():
    created = key_create(
        tenant=TenantFactory(), name="ci", signing_secret="sign-me-please-0123456789"
    )
    dump = table_dump(ApiKey._meta.db_table)
    assert created.secret not in dump
    assert created.secret[11:] not in dump  # not even the part after the display prefix
    assert "sign-me-please-0123456789" not in dump
    assert hashlib.sha256(created.secret.encode()).hexdigest() in dump
    assert created.secret.startswith("gw-") and len(created.secret) > 40


def test_secret_authenticates_and_is_not_recoverable():
    created = key_create(tenant=TenantFactory(), name="ci")
    key = key_get_by_secret(secret=created.secret)
    assert key == created.key
    assert not any(
        created.secret in str(getattr(key, f.attname)) for f in ApiKey._meta.concrete_fields
    )
    assert key_get_by_secret(secret=created.secret + "x") is None


def test_imported_secret_is_hashed_and_unique():
    tenant = TenantFactory()
    key_create(tenant=tenant, name="a", secret="gw-imported-secret-0123456789")
    assert key_get_by_secret(secret="gw-imported-secret-0123456789").name == "a"
    from apps.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        key_create(tenant=tenant, name="b", secret="gw-imported-secret-0123456789")
    with pytest.raises(InvalidRequest):
        key_create(tenant=tenant, name="c", secret="short")
