"""Secret stores a credential reference may point into: Vault, AWS Secrets Manager, Azure Key Vault.

A reference is ``<scheme>:<locator>[#field]``:

- ``vault:secret/openai#api_key`` — HashiCorp Vault KV (``hvac``); the first path segment
  is the mount, the rest the secret's path. KV version 2 unless ``GATEWAY_VAULT_KV_VERSION=1``.
- ``aws-sm:prod/openai#api_key`` — AWS Secrets Manager (``boto3``); the secret id or ARN.
- ``azure-kv:https://myvault.vault.azure.net/openai-key`` — Azure Key Vault
  (``azure-keyvault-secrets`` and ``azure-identity``); optionally ``/<version>`` after the name.

``#field`` picks one field of a secret that holds a JSON object (a Vault secret always
does). Every backend reads its configuration the way its SDK does (``VAULT_ADDR`` and
``VAULT_TOKEN``; the AWS credential chain and ``AWS_REGION``; ``DefaultAzureCredential``),
and imports its SDK only when a reference of its scheme is first resolved: the gateway
does not depend on any of them. Callers go through :func:`apps.core.secrets.resolve`,
which caches what these return.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from typing import Any, ClassVar
from urllib.parse import urlsplit


class SecretBackendError(ValueError):
    """A reference that cannot be resolved. Messages name the reference, never a value."""


class SecretBackend:
    """Resolve the part of a reference after ``<scheme>:`` to the secret's value.

    ``client`` may be given (tests pass a fake); otherwise :meth:`make_client` builds the
    SDK's client on first use and keeps it (the SDKs' clients are thread-safe).
    """

    scheme: ClassVar[str]
    label: ClassVar[str]
    # Import names that must be importable, and what to install when they are not.
    modules: ClassVar[tuple[str, ...]]
    install: ClassVar[str]

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- what every backend shares ------------------------------------------------
    @classmethod
    def sdk_available(cls) -> bool:
        try:
            for name in cls.modules:
                importlib.import_module(name)
        except ImportError:
            return False
        return True

    @property
    def usable(self) -> bool:
        return self._client is not None or self.sdk_available()

    def client(self, where: str = "") -> Any:
        """The SDK client for ``where`` (Azure: one per vault URL), built once."""
        if self._client is not None:
            return self._client
        with self._lock:
            if where not in self._clients:
                try:
                    self._clients[where] = self.make_client(where)
                except ImportError as exc:
                    raise SecretBackendError(
                        f"install {self.install} to use {self.scheme}: references"
                    ) from exc
                except Exception as exc:
                    raise SecretBackendError(
                        f"{self.scheme}: cannot create the client: {_describe(exc)}"
                    ) from exc
            return self._clients[where]

    def get(self, ref: str) -> str:
        """The secret ``ref`` (without the scheme) names."""
        locator, field = split_field(ref)
        if not locator:
            raise SecretBackendError(f"{self.scheme}: reference needs a secret name")
        return self.fetch(locator, field)

    # --- what each backend implements ------------------------------------------------
    def make_client(self, where: str) -> Any:
        raise NotImplementedError

    def fetch(self, locator: str, field: str | None) -> str:
        raise NotImplementedError


def split_field(ref: str) -> tuple[str, str | None]:
    """``path#field`` → (path, field); no ``#`` → (path, None)."""
    locator, sep, field = ref.rpartition("#")
    if not sep:
        return ref.strip(), None
    return locator.strip(), field.strip() or None


def pick_field(data: Any, field: str | None, where: str) -> str:
    """One value of a secret: ``field`` of a JSON object, or the only value it has."""
    if isinstance(data, str):
        if field is None:
            return data
        try:
            data = json.loads(data)
        except ValueError:
            raise SecretBackendError(f"{where} is not a JSON object, so it has no field {field!r}")
    if not isinstance(data, dict):
        raise SecretBackendError(f"{where} is not a JSON object")
    if field is None:
        if len(data) == 1:
            (value,) = data.values()
            return str(value)
        names = ", ".join(sorted(map(str, data))) or "none"
        raise SecretBackendError(f"{where} has several fields ({names}): add #field")
    if field not in data:
        names = ", ".join(sorted(map(str, data))) or "none"
        raise SecretBackendError(f"{where} has no field {field!r} (fields: {names})")
    value = data[field]
    if isinstance(value, dict | list):
        raise SecretBackendError(f"{where} field {field!r} is not a string")
    return str(value)


def _describe(exc: Exception) -> str:
    """An SDK error, short: its class and first line (SDK errors do not carry values)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- HashiCorp Vault ------------------------------------------------------------------


class VaultBackend(SecretBackend):
    scheme = "vault"
    label = "HashiCorp Vault (KV)"
    modules = ("hvac",)
    install = "hvac"

    def make_client(self, where: str) -> Any:
        import hvac

        # hvac reads VAULT_ADDR, VAULT_TOKEN (or ~/.vault-token), VAULT_CACERT and
        # VAULT_CLIENT_CERT itself; the namespace it does not.
        kwargs: dict[str, Any] = {}
        if os.environ.get("VAULT_NAMESPACE"):
            kwargs["namespace"] = os.environ["VAULT_NAMESPACE"]
        return hvac.Client(**kwargs)

    def fetch(self, locator: str, field: str | None) -> str:
        mount, _, path = locator.strip("/").partition("/")
        if not path:
            raise SecretBackendError(
                f"vault:{locator} needs a mount and a path, e.g. vault:secret/openai#api_key"
            )
        kv = self.client().secrets.kv
        try:
            if os.environ.get("GATEWAY_VAULT_KV_VERSION", "2").strip() == "1":
                data = kv.v1.read_secret(path=path, mount_point=mount)["data"]
            else:
                response = kv.v2.read_secret_version(
                    path=path, mount_point=mount, raise_on_deleted_version=True
                )
                data = response["data"]["data"]
        except SecretBackendError:
            raise
        except Exception as exc:
            raise SecretBackendError(f"vault: cannot read {locator}: {_describe(exc)}") from exc
        return pick_field(data, field, f"vault:{locator}")


# --- AWS Secrets Manager ----------------------------------------------------------------


class AwsSecretsManagerBackend(SecretBackend):
    scheme = "aws-sm"
    label = "AWS Secrets Manager"
    modules = ("boto3",)
    install = "boto3"

    def make_client(self, where: str) -> Any:
        import boto3

        # Region and credentials from the standard chain: AWS_REGION / AWS_DEFAULT_REGION,
        # AWS_ACCESS_KEY_ID…, AWS_PROFILE, an instance or task role.
        return boto3.client("secretsmanager")

    def fetch(self, locator: str, field: str | None) -> str:
        try:
            response = self.client().get_secret_value(SecretId=locator)
        except Exception as exc:
            raise SecretBackendError(f"aws-sm: cannot read {locator}: {_describe(exc)}") from exc
        value = response.get("SecretString")
        if value is None:
            binary = response.get("SecretBinary")
            if binary is None:
                raise SecretBackendError(f"aws-sm:{locator} has no value")
            try:
                value = bytes(binary).decode()
            except UnicodeDecodeError:
                raise SecretBackendError(f"aws-sm:{locator} is binary, not text")
        return pick_field(value, field, f"aws-sm:{locator}")


# --- Azure Key Vault ----------------------------------------------------------------------


class AzureKeyVaultBackend(SecretBackend):
    """``azure-kv:https://<vault>.vault.azure.net/<name>[/<version>]``; a client per vault.

    An injected ``client`` (a ``SecretClient`` or a fake of one) answers for every vault.
    """

    scheme = "azure-kv"
    label = "Azure Key Vault"
    modules = ("azure.identity", "azure.keyvault.secrets")
    install = "azure-keyvault-secrets and azure-identity"

    def __init__(self, client: Any = None) -> None:
        super().__init__(client)
        self._credential: Any = None

    def make_client(self, where: str) -> Any:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        # DefaultAzureCredential: AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET,
        # workload or managed identity, or the Azure CLI's login; one for every vault.
        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return SecretClient(vault_url=where, credential=self._credential)

    def fetch(self, locator: str, field: str | None) -> str:
        url = urlsplit(locator)
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["secrets"]:  # the portal's secret identifier: /secrets/<name>/<version>
            parts = parts[1:]
        if url.scheme != "https" or not url.hostname or not 1 <= len(parts) <= 2:
            raise SecretBackendError(
                f"azure-kv:{locator} must look like "
                "azure-kv:https://<vault>.vault.azure.net/<secret-name>[/<version>]"
            )
        vault_url = f"https://{url.netloc}"
        name, version = parts[0], (parts[1] if len(parts) == 2 else None)
        client = self.client(vault_url)
        try:
            secret = (
                client.get_secret(name, version=version) if version else client.get_secret(name)
            )
        except Exception as exc:
            raise SecretBackendError(f"azure-kv: cannot read {locator}: {_describe(exc)}") from exc
        if secret.value is None:
            raise SecretBackendError(f"azure-kv:{locator} has no value")
        return pick_field(secret.value, field, f"azure-kv:{locator}")


# --- the registry ---------------------------------------------------------------------------

_backends: dict[str, SecretBackend] = {}


def register(backend: SecretBackend) -> SecretBackend | None:
    """Make ``backend`` answer for its scheme; returns the one it replaces (tests restore it)."""
    previous = _backends.get(backend.scheme)
    _backends[backend.scheme] = backend
    return previous


def schemes() -> tuple[str, ...]:
    """Every scheme the gateway recognises, whether or not its SDK is installed."""
    return tuple(_backends)


def available() -> dict[str, bool]:
    """Scheme → whether it can resolve references in this process."""
    return {scheme: backend.usable for scheme, backend in _backends.items()}


def get(scheme: str) -> SecretBackend:
    try:
        return _backends[scheme]
    except KeyError:
        raise SecretBackendError(f"unknown secret reference scheme {scheme!r}")


for _backend in (VaultBackend(), AwsSecretsManagerBackend(), AzureKeyVaultBackend()):
    register(_backend)
