"""Secret-store references (vault:, aws-sm:, azure-kv:) resolved through fake SDK clients.

None of hvac, boto3 or the Azure SDK is installed here (nor reachable): each backend is
tested with a fake client that answers like the SDK's documented return values, and
with fake SDK modules in ``sys.modules`` to check how the backend builds its client.
Without the SDK, a reference says what to install.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from apps.core import secret_backends, secrets
from apps.core.secret_backends import (
    AwsSecretsManagerBackend,
    AzureKeyVaultBackend,
    SecretBackend,
    VaultBackend,
)
from apps.core.secrets import SecretReferenceError
from apps.providers.models import Provider
from apps.providers.selectors import provider_target

# --- fakes of the three SDKs' clients ------------------------------------------------------


class InvalidPath(Exception):
    """As hvac.exceptions.InvalidPath."""


class FakeVaultClient:
    """``hvac.Client``: ``.secrets.kv.v2.read_secret_version`` / ``.secrets.kv.v1.read_secret``."""

    def __init__(self, store: dict[tuple[str, str], dict[str, Any]], **kwargs: Any) -> None:
        self.store, self.kwargs, self.calls = store, kwargs, []
        v1 = types.SimpleNamespace(read_secret=self._read_v1)
        v2 = types.SimpleNamespace(read_secret_version=self._read_v2)
        self.secrets = types.SimpleNamespace(kv=types.SimpleNamespace(v1=v1, v2=v2))

    def _lookup(self, mount: str, path: str) -> dict[str, Any]:
        if (mount, path) not in self.store:
            raise InvalidPath(f"None, on get http://vault:8200/v1/{mount}/data/{path}")
        return self.store[(mount, path)]

    def _read_v2(self, path: str, mount_point: str = "secret", **kwargs: Any) -> dict:
        self.calls.append(("v2", mount_point, path, kwargs))
        data = self._lookup(mount_point, path)
        return {"data": {"data": data, "metadata": {"version": 3}}}

    def _read_v1(self, path: str, mount_point: str = "secret") -> dict:
        self.calls.append(("v1", mount_point, path, {}))
        return {"data": self._lookup(mount_point, path), "lease_duration": 0}


class ResourceNotFoundException(Exception):
    """As botocore's ClientError for ResourceNotFoundException."""


class FakeSecretsManager:
    """``boto3.client("secretsmanager")``: ``get_secret_value(SecretId=...)``."""

    def __init__(self, store: dict[str, dict[str, Any]]) -> None:
        self.store, self.calls = store, []

    def get_secret_value(self, *, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        if SecretId not in self.store:
            raise ResourceNotFoundException(
                "An error occurred (ResourceNotFoundException) when calling the "
                "GetSecretValue operation: Secrets Manager can't find the specified secret."
            )
        return {
            "ARN": f"arn:aws:secretsmanager:eu-west-1:1:secret:{SecretId}",
            **self.store[SecretId],
        }


class ResourceNotFoundError(Exception):
    """As azure.core.exceptions.ResourceNotFoundError."""


class FakeSecretClient:
    """``azure.keyvault.secrets.SecretClient``: ``get_secret(name, version=None).value``."""

    def __init__(self, store: dict[tuple[str, str | None], str], vault_url: str = "") -> None:
        self.store, self.vault_url, self.calls = store, vault_url, []

    def get_secret(self, name: str, version: str | None = None, **kwargs: Any):
        self.calls.append((name, version))
        if (name, version) not in self.store:
            raise ResourceNotFoundError(
                f"(SecretNotFound) A secret with (name/id) {name} was not found"
            )
        return types.SimpleNamespace(name=name, value=self.store[(name, version)])


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_cache():
    secrets.clear_cache()
    yield
    secrets.clear_cache()


@pytest.fixture
def use_backend():
    """Register a backend for the test; the original is restored afterwards."""
    replaced: list[SecretBackend] = []

    def use(backend: SecretBackend) -> SecretBackend:
        previous = secret_backends.register(backend)
        assert previous is not None
        replaced.append(previous)
        return backend

    yield use
    for previous in reversed(replaced):
        secret_backends.register(previous)


@pytest.fixture
def vault(use_backend) -> FakeVaultClient:
    client = FakeVaultClient(
        {
            ("secret", "llm/openai"): {"api_key": "sk-vault-openai", "org": "org-1"},
            ("secret", "llm/single"): {"value": "sk-vault-single"},
            ("kv", "team/anthropic"): {"api_key": "sk-vault-v1"},
        }
    )
    use_backend(VaultBackend(client=client))
    return client


@pytest.fixture
def aws(use_backend) -> FakeSecretsManager:
    client = FakeSecretsManager(
        {
            "prod/openai": {"SecretString": '{"api_key": "sk-aws-json", "org": "o"}'},
            "prod/plain": {"SecretString": "sk-aws-plain"},
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/arn-AbCdEf": {
                "SecretString": "sk-aws-by-arn"
            },
            "prod/binary": {"SecretBinary": b"sk-aws-binary"},
        }
    )
    use_backend(AwsSecretsManagerBackend(client=client))
    return client


@pytest.fixture
def azure(use_backend) -> FakeSecretClient:
    client = FakeSecretClient(
        {
            ("openai-key", None): "sk-azure-latest",
            ("openai-key", "0123abcd"): "sk-azure-pinned",
            ("bundle", None): '{"api_key": "sk-azure-json"}',
        }
    )
    use_backend(AzureKeyVaultBackend(client=client))
    return client


# --- references are recognised ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "env:X",
        "file:/run/secrets/x",
        "vault:secret/llm/openai#api_key",
        "aws-sm:prod/openai#api_key",
        "azure-kv:https://v.vault.azure.net/openai-key",
    ],
)
def test_references_are_recognised(value):
    assert secrets.is_reference(value)


@pytest.mark.parametrize("value", ["sk-live-abc", "vaults:x", "https://x", "aws:x", ""])
def test_anything_else_is_a_literal(value):
    assert not secrets.is_reference(value)
    assert secrets.resolve(value) == value


# --- Vault ---------------------------------------------------------------------------------


def test_vault_reads_kv2_and_picks_the_field(vault):
    assert secrets.resolve("vault:secret/llm/openai#api_key") == "sk-vault-openai"
    assert vault.calls == [("v2", "secret", "llm/openai", {"raise_on_deleted_version": True})]
    # A secret with a single field needs no #field.
    assert secrets.resolve("vault:secret/llm/single") == "sk-vault-single"


def test_vault_kv1(vault, monkeypatch):
    monkeypatch.setenv("GATEWAY_VAULT_KV_VERSION", "1")
    assert secrets.resolve("vault:kv/team/anthropic#api_key") == "sk-vault-v1"
    assert vault.calls[-1][:3] == ("v1", "kv", "team/anthropic")


@pytest.mark.parametrize(
    "ref, message",
    [
        ("vault:secret/llm/openai", "has several fields (api_key, org): add #field"),
        ("vault:secret/llm/openai#nope", "has no field 'nope' (fields: api_key, org)"),
        ("vault:secret/llm/missing#x", "vault: cannot read secret/llm/missing: InvalidPath"),
        ("vault:secret#x", "needs a mount and a path"),
        ("vault:#x", "reference needs a secret name"),
    ],
)
def test_vault_errors_name_the_reference_never_a_value(vault, ref, message):
    with pytest.raises(
        SecretReferenceError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as exc:
        secrets.resolve(ref)
    assert "sk-vault" not in str(exc.value)


def test_vault_client_is_built_from_the_sdk_and_environment(use_backend, monkeypatch):
    made: list[FakeVaultClient] = []

    def client(**kwargs: Any) -> FakeVaultClient:
        made.append(FakeVaultClient({("secret", "x"): {"k": "v"}}, **kwargs))
        return made[-1]

    monkeypatch.setitem(sys.modules, "hvac", types.SimpleNamespace(Client=client))
    monkeypatch.setenv("VAULT_NAMESPACE", "team-a")
    backend = use_backend(VaultBackend())
    assert backend.usable
    assert secrets.resolve("vault:secret/x#k") == "v"
    secrets.clear_cache()
    assert secrets.resolve("vault:secret/x#k") == "v"
    assert len(made) == 1 and made[0].kwargs == {"namespace": "team-a"}  # built once


# --- AWS Secrets Manager ------------------------------------------------------------------


def test_aws_json_field_plain_string_arn_and_binary(aws):
    assert secrets.resolve("aws-sm:prod/openai#api_key") == "sk-aws-json"
    assert secrets.resolve("aws-sm:prod/plain") == "sk-aws-plain"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/arn-AbCdEf"
    assert secrets.resolve(f"aws-sm:{arn}") == "sk-aws-by-arn"
    assert secrets.resolve("aws-sm:prod/binary") == "sk-aws-binary"
    assert aws.calls == ["prod/openai", "prod/plain", arn, "prod/binary"]


@pytest.mark.parametrize(
    "ref, message",
    [
        ("aws-sm:prod/missing", "aws-sm: cannot read prod/missing: ResourceNotFoundException"),
        ("aws-sm:prod/plain#api_key", "is not a JSON object, so it has no field 'api_key'"),
        ("aws-sm:prod/openai#nope", r"has no field 'nope' \(fields: api_key, org\)"),
    ],
)
def test_aws_errors(aws, ref, message):
    with pytest.raises(SecretReferenceError, match=message) as exc:
        secrets.resolve(ref)
    assert "sk-aws" not in str(exc.value)


def test_aws_client_is_built_from_the_sdk(use_backend, monkeypatch):
    services: list[str] = []

    def client(service: str) -> FakeSecretsManager:
        services.append(service)
        return FakeSecretsManager({"s": {"SecretString": "v"}})

    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(client=client))
    use_backend(AwsSecretsManagerBackend())
    assert secrets.resolve("aws-sm:s") == "v"
    assert services == ["secretsmanager"]  # region and credentials: the standard AWS chain


# --- Azure Key Vault -------------------------------------------------------------------------


def test_azure_latest_pinned_version_identifier_and_field(azure):
    vault = "https://myvault.vault.azure.net"
    assert secrets.resolve(f"azure-kv:{vault}/openai-key") == "sk-azure-latest"
    assert secrets.resolve(f"azure-kv:{vault}/openai-key/0123abcd") == "sk-azure-pinned"
    assert secrets.resolve(f"azure-kv:{vault}/secrets/openai-key/0123abcd") == "sk-azure-pinned"
    assert secrets.resolve(f"azure-kv:{vault}/bundle#api_key") == "sk-azure-json"
    assert azure.calls == [
        ("openai-key", None),
        ("openai-key", "0123abcd"),
        ("openai-key", "0123abcd"),
        ("bundle", None),
    ]


@pytest.mark.parametrize(
    "ref, message",
    [
        ("azure-kv:http://myvault.vault.azure.net/x", "must look like"),
        ("azure-kv:https://myvault.vault.azure.net/", "must look like"),
        ("azure-kv:https://myvault.vault.azure.net/missing", "ResourceNotFoundError"),
    ],
)
def test_azure_errors(azure, ref, message):
    with pytest.raises(SecretReferenceError, match=message):
        secrets.resolve(ref)


def test_azure_clients_per_vault_share_one_credential(use_backend, monkeypatch):
    credentials: list[object] = []
    clients: list[FakeSecretClient] = []

    class DefaultAzureCredential:
        def __init__(self) -> None:
            credentials.append(self)

    def secret_client(vault_url: str, credential: object) -> FakeSecretClient:
        assert credential is credentials[0]
        clients.append(FakeSecretClient({("k", None): vault_url}, vault_url=vault_url))
        return clients[-1]

    azure_pkg = types.ModuleType("azure")
    keyvault_pkg = types.ModuleType("azure.keyvault")
    identity = types.SimpleNamespace(DefaultAzureCredential=DefaultAzureCredential)
    secrets_module = types.SimpleNamespace(SecretClient=secret_client)
    for name, module in {
        "azure": azure_pkg,
        "azure.identity": identity,
        "azure.keyvault": keyvault_pkg,
        "azure.keyvault.secrets": secrets_module,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    use_backend(AzureKeyVaultBackend())

    assert secrets.resolve("azure-kv:https://a.vault.azure.net/k") == "https://a.vault.azure.net"
    assert secrets.resolve("azure-kv:https://b.vault.azure.net/k") == "https://b.vault.azure.net"
    secrets.clear_cache()
    assert secrets.resolve("azure-kv:https://a.vault.azure.net/k") == "https://a.vault.azure.net"
    assert [c.vault_url for c in clients] == [
        "https://a.vault.azure.net",
        "https://b.vault.azure.net",
    ]
    assert len(credentials) == 1


# --- without the SDK ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, blocked, ref, install",
    [
        (VaultBackend, ["hvac"], "vault:secret/x#k", "install hvac to use vault: references"),
        (AwsSecretsManagerBackend, ["boto3"], "aws-sm:prod/x", "install boto3 to use aws-sm:"),
        (
            AzureKeyVaultBackend,
            ["azure.identity", "azure.keyvault.secrets"],
            "azure-kv:https://v.vault.azure.net/x",
            "install azure-keyvault-secrets and azure-identity to use azure-kv:",
        ),
    ],
)
def test_a_missing_sdk_is_named(use_backend, monkeypatch, backend, blocked, ref, install):
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # "import hvac" raises ImportError
    use_backend(backend())
    assert secret_backends.available()[backend.scheme] is False
    with pytest.raises(SecretReferenceError, match=install):
        secrets.resolve(ref)
    # Still a reference: it is kept as written, never encrypted as if it were a key.
    provider = Provider(name="p", kind="openai")
    provider.set_credential(ref)
    assert (provider.credential_ref, provider.credential_encrypted) == (ref, "")


def test_the_sdks_are_not_installed_here():
    """What the README says: these backends are verified with fakes only."""
    assert not VaultBackend.sdk_available()
    assert not AwsSecretsManagerBackend.sdk_available()
    assert not AzureKeyVaultBackend.sdk_available()


# --- the cache ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_cached_for_the_ttl(vault, monkeypatch, settings):
    clock = Clock()
    monkeypatch.setattr(secrets.time, "monotonic", clock)
    settings.GATEWAY_SECRET_CACHE_SECONDS = 60
    ref = "vault:secret/llm/openai#api_key"
    for _ in range(100):
        assert secrets.resolve(ref) == "sk-vault-openai"
    assert len(vault.calls) == 1

    vault.store[("secret", "llm/openai")] = {"api_key": "sk-vault-rotated", "org": "o"}
    clock.now += 59
    assert secrets.resolve(ref) == "sk-vault-openai"
    clock.now += 2
    assert secrets.resolve(ref) == "sk-vault-rotated"
    assert len(vault.calls) == 2

    vault.store[("secret", "llm/openai")] = {"api_key": "sk-vault-third", "org": "o"}
    secrets.clear_cache()
    assert secrets.resolve(ref) == "sk-vault-third"


def test_errors_are_not_cached(vault):
    with pytest.raises(SecretReferenceError):
        secrets.resolve("vault:secret/later#k")
    vault.store[("secret", "later")] = {"k": "now-there"}
    assert secrets.resolve("vault:secret/later#k") == "now-there"


def test_a_zero_ttl_disables_the_cache(vault, settings):
    settings.GATEWAY_SECRET_CACHE_SECONDS = 0
    secrets.resolve("vault:secret/llm/single")
    secrets.resolve("vault:secret/llm/single")
    assert len(vault.calls) == 2


def test_env_and_file_references_are_read_every_time(monkeypatch, tmp_path):
    monkeypatch.setenv("ROTATING_KEY", "one")
    assert secrets.resolve("env:ROTATING_KEY") == "one"
    monkeypatch.setenv("ROTATING_KEY", "two")
    assert secrets.resolve("env:ROTATING_KEY") == "two"
    path = tmp_path / "key"
    path.write_text("from-file\n")
    assert secrets.resolve(f"file:{path}") == "from-file"


# --- providers use them -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_provider_credential_from_a_secret_store(aws):
    from apps.providers.services import provider_create

    provider = provider_create(
        name="from-aws", kind="openai", credential="aws-sm:prod/openai#api_key"
    )
    assert provider.credential_ref == "aws-sm:prod/openai#api_key"
    assert provider.credential_encrypted == ""
    assert provider.get_credential() == "sk-aws-json"
    assert provider_target(provider=provider).credential == "sk-aws-json"


def test_an_sdk_failing_in_any_way_is_one_error_type(use_backend, monkeypatch):
    def broken_client(**kwargs: Any):
        raise RuntimeError("no VAULT_ADDR")

    monkeypatch.setitem(sys.modules, "hvac", types.SimpleNamespace(Client=broken_client))
    use_backend(VaultBackend())
    with pytest.raises(SecretReferenceError, match="vault: cannot create the client: RuntimeError"):
        secrets.resolve("vault:secret/x#k")

    odd = FakeVaultClient({})
    odd.secrets.kv.v2.read_secret_version = lambda **kwargs: {"unexpected": "shape"}
    use_backend(VaultBackend(client=odd))
    with pytest.raises(SecretReferenceError, match="vault: cannot read secret/x: KeyError"):
        secrets.resolve("vault:secret/x#k")

    class Weird(SecretBackend):
        scheme, modules, install = "vault", (), ""

        def fetch(self, locator: str, field: str | None) -> str:
            raise ZeroDivisionError

    use_backend(Weird(client=object()))
    with pytest.raises(SecretReferenceError, match="vault: cannot resolve the reference"):
        secrets.resolve("vault:secret/x#k")
