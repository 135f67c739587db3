"""`manage.py rotate_encryption_key`: every encrypted value moves to the newest key."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.billing.models import Budget
from apps.billing.services import budget_set
from apps.core import crypto
from apps.core.management.commands.rotate_encryption_key import encrypted_columns
from apps.keys.models import ApiKey
from apps.providers.models import Provider
from apps.providers.selectors import provider_target
from apps.providers.services import provider_create
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db

OLD, NEW, LOST = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def use_keys(settings):
    def use(*keys: str) -> None:
        settings.GATEWAY_ENCRYPTION_KEYS = list(keys)
        crypto.reset_keys()

    yield use
    crypto.reset_keys()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rotate_encryption_key", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def every_ciphertext() -> list[str]:
    values = []
    for model, field in encrypted_columns():
        values += [v for v in model._base_manager.values_list(field.attname, flat=True) if v]
    return values


@pytest.fixture
def secrets_under_old_key(use_keys):
    use_keys(OLD)
    tenant = TenantFactory(name="acme")
    providers = [
        provider_create(name=f"p{i}", kind="openai", credential=f"sk-live-{i}-0123456789")
        for i in range(5)
    ]
    provider_create(name="by-ref", kind="openai", credential="env:SOME_KEY")
    provider_create(name="none", kind="mock")
    key = make_key(tenant, name="signed", signing_secret="signing-secret-0123456789").key
    budget = budget_set(
        tenant=tenant, period="monthly", limit_usd="5", webhook_secret="hook-secret-0123456789"
    )
    return providers, key, budget


def test_the_encrypted_columns_are_found_by_name():
    found = {f"{model._meta.label}.{field.name}" for model, field in encrypted_columns()}
    assert {
        "providers.Provider.credential_encrypted",
        "keys.ApiKey.signing_secret_encrypted",
        "billing.Budget.webhook_secret_encrypted",
    } <= found


def test_rotation_moves_everything_to_the_new_key(use_keys, secrets_under_old_key):
    providers, key, budget = secrets_under_old_key
    before = {p.pk: p.credential_encrypted for p in providers}

    use_keys(NEW, OLD)
    with pytest.raises(CommandError, match="7 value\\(s\\) are still under a retired key"):
        run("--check")

    output = run("--batch-size", "2")
    assert "providers.Provider.credential_encrypted: 5 re-encrypted" in output
    assert "keys.ApiKey.signing_secret_encrypted: 1 re-encrypted" in output
    assert "billing.Budget.webhook_secret_encrypted: 1 re-encrypted" in output
    assert "7 value(s) re-encrypted" in output
    assert all(
        Provider.objects.get(pk=pk).credential_encrypted != old for pk, old in before.items()
    )
    assert "nothing under a retired key" in run("--check")

    # The old key retires: everything still decrypts, and nothing is under the old key.
    use_keys(NEW)
    for i, provider in enumerate(providers):
        provider.refresh_from_db()
        assert provider.get_credential() == f"sk-live-{i}-0123456789"
        assert provider_target(provider=provider).credential == f"sk-live-{i}-0123456789"
    assert Provider.objects.get(name="by-ref").credential_encrypted == ""
    key = ApiKey.objects.get(pk=key.pk)
    assert crypto.decrypt(key.signing_secret_encrypted) == "signing-secret-0123456789"
    budget = Budget.objects.get(pk=budget.pk)
    assert crypto.decrypt(budget.webhook_secret_encrypted) == "hook-secret-0123456789"

    old_only = Fernet(OLD.encode())
    ciphertexts = every_ciphertext()
    assert len(ciphertexts) == 7
    for token in ciphertexts:
        with pytest.raises(InvalidToken):
            old_only.decrypt(token.encode())
        Fernet(NEW.encode()).decrypt(token.encode())


def test_rotation_is_idempotent_and_audited(use_keys, secrets_under_old_key):
    use_keys(NEW, OLD)
    run()
    tokens = sorted(every_ciphertext())
    again = run()
    assert "0 value(s) re-encrypted" in again and "5 already current" in again
    assert sorted(every_ciphertext()) == tokens  # current values are left alone

    event = AuditEvent.objects.get(object_type="core.encryptionkey")
    assert (event.actor, event.source, event.action) == (
        "rotate_encryption_key",
        "system",
        "update",
    )
    assert event.changes["providers.Provider.credential_encrypted"] == [None, 5]
    dump = repr(list(AuditEvent.objects.values()))
    assert all(token not in dump for token in tokens)
    assert "sk-live-0-0123456789" not in dump


def test_values_under_no_configured_key_are_reported_and_left_alone(use_keys):
    use_keys(LOST)
    stray = provider_create(name="stray", kind="openai", credential="sk-live-lost-0123456789")
    use_keys(NEW, OLD)
    provider_create(name="fine", kind="openai", credential="sk-live-fine-0123456789")
    with pytest.raises(CommandError, match="1 value\\(s\\) decrypt under no configured key"):
        run()
    stray_after = Provider.objects.get(pk=stray.pk).credential_encrypted
    assert stray_after == stray.credential_encrypted
    with pytest.raises(CommandError, match="decrypt under no configured key"):
        run("--check")


def test_generate_key_prints_a_usable_key():
    key = run("--generate-key").strip()
    token = Fernet(key.encode()).encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"
