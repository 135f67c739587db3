"""The config file's shape: read a loaded YAML document into specs, collecting every error.

This layer knows nothing about the database: it checks structure, types and values
and resolves ``env:``/``file:`` references. Cross-checks against stored objects
(unknown providers, fallbacks, secret collisions) happen in :mod:`.plan`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_slug
from django.utils.dateparse import parse_datetime

from apps.core import secrets
from apps.keys.models import Scope
from apps.providers.adapters import registry
from apps.providers.models import ModelMode
from apps.tenants.models import BudgetPeriod

# ``api_key: "<encrypted>"`` is what export writes for a literal credential: on apply it
# means "keep the credential stored for this provider".
KEEP_CURRENT = "<encrypted>"

SECTIONS = ("providers", "models", "tenants")
PROVIDER_KEYS = ("name", "kind", "base_url", "api_key", "options", "enabled")
MODEL_KEYS = (
    "name",
    "description",
    "mode",
    "context_window",
    "max_output_tokens",
    "deployments",
    "pricing",
    "fallbacks",
    "timeout_s",
    "retries",
    "enabled",
)
DEPLOYMENT_KEYS = ("provider", "upstream_model", "weight", "priority", "enabled", "options")
PRICING_KEYS = ("input_per_million", "output_per_million")
TENANT_KEYS = ("name", "display_name", "enabled", "budget", "keys")
BUDGET_KEYS = ("limit_usd", "period")
KEY_KEYS = (
    "name",
    "secret",
    "signing_secret",
    "require_signature",
    "scopes",
    "rpm",
    "tpm",
    "models",
    "expires_at",
    "revoked",
)

SMALLINT_MAX = 32767
POSITIVE_INT_MAX = 2147483647
MIN_KEY_SECRET_LENGTH = 20  # what key_create accepts for an imported secret
_MISSING = object()


@dataclass
class ProviderSpec:
    path: str
    name: str
    kind: str
    base_url: str = ""
    api_key: str = ""  # as written: a reference, a literal, KEEP_CURRENT or "" (none)
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class DeploymentSpec:
    path: str
    provider: str
    upstream_model: str
    weight: int = 1
    priority: int = 0
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> tuple[str, str]:
        return (self.provider, self.upstream_model)


@dataclass
class ModelSpec:
    path: str
    name: str
    deployments: list[DeploymentSpec] = field(default_factory=list)
    input_price_per_million: Decimal = Decimal("0")
    output_price_per_million: Decimal = Decimal("0")
    fallbacks: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    retries: int | None = None
    description: str = ""
    mode: str = ModelMode.CHAT.value
    context_window: int | None = None
    max_output_tokens: int | None = None
    enabled: bool = True


@dataclass
class KeySpec:
    path: str
    name: str
    secret: str | None = None  # resolved; None = generate on creation, keep afterwards
    signing_secret: str | None = None  # resolved; None = keep whatever is stored
    require_signature: bool = False
    scopes: list[str] = field(default_factory=lambda: [Scope.INFERENCE.value])
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    revoked: bool = False


@dataclass
class TenantSpec:
    path: str
    name: str
    display_name: str = ""
    enabled: bool = True
    budget_limit_usd: Decimal | None = None
    budget_period: str = BudgetPeriod.MONTHLY.value
    keys: list[KeySpec] | None = None  # None: the tenant's keys are not managed by this file


@dataclass
class ConfigSpec:
    """A validated document. A section that is ``None`` was absent from the file."""

    providers: list[ProviderSpec] | None = None
    models: list[ModelSpec] | None = None
    tenants: list[TenantSpec] | None = None


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Reader:
    """Reads one mapping of the document, recording errors under its YAML path."""

    def __init__(
        self,
        errors: list[str],
        path: str,
        data: object,
        allowed: tuple[str, ...],
        *,
        what: str = "field",
    ):
        self.errors = errors
        self.path = path
        self.ok = isinstance(data, dict)
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        if not self.ok:
            self.error(f"must be a mapping, not {_describe(data)}", here=True)
            return
        for key in self.data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.errors.append(
                    f"{self._at(str(key))}: unknown {what}{suggestion}; allowed: {', '.join(allowed)}"
                )

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str, key: str | None = None, *, here: bool = False) -> None:
        where = self.path if here or key is None else self._at(key)
        self.errors.append(f"{where or '(document)'}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key, _MISSING)

    def str(
        self, key: str, *, required: bool = False, default: str = "", max_length: int = 0
    ) -> str:
        value = self.raw(key)
        if value is _MISSING or (value is None and not required):
            if required and self.ok:
                self.error("is required", key)
            return default
        if not isinstance(value, str):
            self.error(f"must be a string, not {_describe(value)}", key)
            return default
        if required and not value.strip():
            self.error("must not be empty", key)
        if max_length and len(value) > max_length:
            self.error(f"must be at most {max_length} characters", key)
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(f"must be true or false, not {_describe(value)}", key)
            return default
        return value

    def int(
        self, key: str, *, default: int | None, minimum: int, maximum: int, nullable: bool
    ) -> int | None:
        value = self.raw(key)
        if value is _MISSING or (value is None and nullable):
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(f"must be an integer, not {_describe(value)}", key)
            return default
        if not minimum <= value <= maximum:
            self.error(f"must be between {minimum} and {maximum}", key)
            return default
        return value

    def decimal(
        self, key: str, *, default: Decimal | None, places: int, max_digits: int, nullable: bool
    ) -> Decimal | None:
        """Money: YAML numbers go through ``str()`` so 0.15 stays exactly 0.15."""
        value = self.raw(key)
        if value is _MISSING or (value is None and nullable):
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.error(f"must be a number, not {_describe(value)}", key)
            return default
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.error(f"must be a number, not {value!r}", key)
            return default
        if not number.is_finite() or number < 0:
            self.error("must be a finite number, zero or more", key)
            return default
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -places:
            self.error(f"must have at most {places} decimal places", key)
            return default
        if number >= Decimal(10) ** (max_digits - places):
            self.error(f"must be less than {Decimal(10) ** (max_digits - places)}", key)
            return default
        return number

    def str_list(self, key: str, default: list[str]) -> list[str]:
        value = self.raw(key)
        if value is _MISSING or value is None:
            return list(default)
        if not isinstance(value, list):
            self.error(f"must be a list of strings, not {_describe(value)}", key)
            return list(default)
        result = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.errors.append(
                    f"{self._at(key)}[{i}]: must be a non-empty string, not {_describe(item)}"
                )
            else:
                result.append(item)
        return result

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.raw(key)
        if value is _MISSING or value is None:
            return {}
        if not isinstance(value, dict):
            self.error(f"must be a mapping, not {_describe(value)}", key)
            return {}
        return value

    def items(self, key: str) -> list[tuple[str, Any]] | None:
        """A list field's items with their paths; None when absent or not a list."""
        value = self.raw(key)
        if value is _MISSING:
            return None
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(f"must be a list, not {_describe(value)}", key)
            return None
        return [(f"{self._at(key)}[{i}]", item) for i, item in enumerate(value)]

    def secret(self, key: str) -> str | None:
        """A secret field resolved (env:/file:/literal); None when absent."""
        value = self.raw(key)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(f"must be a non-empty string, not {_describe(value)}", key)
            return None
        try:
            return secrets.resolve(value)
        except secrets.SecretReferenceError as exc:
            self.error(f"cannot resolve {value!r}: {exc}", key)
            return None


def _check_slug(reader: _Reader, key: str, value: str) -> None:
    if not value:
        return
    try:
        validate_slug(value)
    except ValidationError:
        reader.error(f"{value!r} must contain only letters, digits, hyphens and underscores", key)


def _duplicates(errors: list[str], what: str, entries: list[tuple[str, object]]) -> None:
    seen: dict[object, str] = {}
    for path, ident in entries:
        if ident in seen:
            errors.append(f"{path}: duplicate {what} {ident!r} (first at {seen[ident]})")
        else:
            seen[ident] = path


def _provider(errors: list[str], path: str, data: object) -> ProviderSpec | None:
    r = _Reader(errors, path, data, PROVIDER_KEYS)
    if not r.ok:
        return None
    name = r.str("name", required=True, max_length=100)
    _check_slug(r, "name", name)
    kind = r.str("kind", required=True)
    if kind and kind not in registry.kinds():
        r.error(f"unknown provider kind {kind!r}; known: {', '.join(registry.kinds())}", "kind")
    base_url = r.str("base_url", max_length=500)
    if base_url:
        try:
            URLValidator()(base_url)
        except ValidationError:
            r.error(f"{base_url!r} is not a valid URL", "base_url")
    api_key = r.str("api_key")
    if api_key and secrets.is_reference(api_key):
        try:
            secrets.resolve(api_key)
        except secrets.SecretReferenceError as exc:
            r.error(f"cannot resolve {api_key!r}: {exc}", "api_key")
    return ProviderSpec(
        path=path,
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=api_key,
        options=r.mapping("options"),
        enabled=r.bool("enabled", True),
    )


def _deployment(errors: list[str], path: str, data: object) -> DeploymentSpec | None:
    r = _Reader(errors, path, data, DEPLOYMENT_KEYS)
    if not r.ok:
        return None
    return DeploymentSpec(
        path=path,
        provider=r.str("provider", required=True),
        upstream_model=r.str("upstream_model", required=True, max_length=200),
        weight=r.int("weight", default=1, minimum=0, maximum=POSITIVE_INT_MAX, nullable=False) or 0,
        priority=r.int("priority", default=0, minimum=0, maximum=SMALLINT_MAX, nullable=False) or 0,
        enabled=r.bool("enabled", True),
        options=r.mapping("options"),
    )


def _model(errors: list[str], path: str, data: object) -> ModelSpec | None:
    r = _Reader(errors, path, data, MODEL_KEYS)
    if not r.ok:
        return None
    spec = ModelSpec(path=path, name=r.str("name", required=True, max_length=200))
    deployments = r.items("deployments") or []
    for dpath, item in deployments:
        deployment = _deployment(errors, dpath, item)
        if deployment is not None:
            spec.deployments.append(deployment)
    _duplicates(
        errors,
        "deployment (provider, upstream_model)",
        [(d.path, d.target) for d in spec.deployments if all(d.target)],
    )
    if r.has("pricing"):
        pricing = _Reader(errors, f"{path}.pricing", r.raw("pricing"), PRICING_KEYS)
        money = dict(default=Decimal("0"), places=6, max_digits=14, nullable=False)
        spec.input_price_per_million = pricing.decimal("input_per_million", **money)  # type: ignore[assignment]
        spec.output_price_per_million = pricing.decimal("output_per_million", **money)  # type: ignore[assignment]
    spec.fallbacks = r.str_list("fallbacks", [])
    if spec.name and spec.name in spec.fallbacks:
        r.error("a model cannot fall back to itself", "fallbacks")
    timeout = r.raw("timeout_s")
    if timeout is not _MISSING and timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            r.error(f"must be a number of seconds, not {_describe(timeout)}", "timeout_s")
        elif timeout < 0.1:
            r.error("must be at least 0.1", "timeout_s")
        else:
            spec.timeout_s = float(timeout)
    spec.retries = r.int("retries", default=None, minimum=0, maximum=SMALLINT_MAX, nullable=True)
    spec.description = r.str("description")
    spec.mode = r.str("mode", default=ModelMode.CHAT.value) or ModelMode.CHAT.value
    if spec.mode not in ModelMode.values:
        r.error(f"must be one of {', '.join(ModelMode.values)}, not {spec.mode!r}", "mode")
    for key in ("context_window", "max_output_tokens"):
        setattr(
            spec,
            key,
            r.int(key, default=None, minimum=0, maximum=POSITIVE_INT_MAX, nullable=True),
        )
    spec.enabled = r.bool("enabled", True)
    return spec


def _datetime(r: _Reader, key: str) -> datetime | None:
    value = r.raw(key)
    if value is _MISSING or value is None:
        return None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time.min)
    elif isinstance(value, str):
        parsed = parse_datetime(value.strip())
    else:
        parsed = None
    if parsed is None:
        r.error(f"must be an ISO 8601 date and time, not {value!r}", key)
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _key(errors: list[str], path: str, data: object) -> KeySpec | None:
    r = _Reader(errors, path, data, KEY_KEYS)
    if not r.ok:
        return None
    spec = KeySpec(path=path, name=r.str("name", required=True, max_length=100))
    spec.secret = r.secret("secret")
    if spec.secret is not None and len(spec.secret) < MIN_KEY_SECRET_LENGTH:
        r.error(
            f"an imported key secret must be at least {MIN_KEY_SECRET_LENGTH} characters", "secret"
        )
    spec.signing_secret = r.secret("signing_secret")
    spec.require_signature = r.bool("require_signature", False)
    scopes = r.str_list("scopes", [Scope.INFERENCE.value])
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        r.error(
            f"unknown scope(s) {', '.join(map(repr, unknown))}; known: {', '.join(Scope.values)}",
            "scopes",
        )
    # The order key_create stores them in, so re-applying compares equal.
    spec.scopes = sorted({s for s in scopes if s in Scope.values}, key=Scope.values.index)
    spec.rpm = r.int("rpm", default=None, minimum=0, maximum=POSITIVE_INT_MAX, nullable=True)
    spec.tpm = r.int("tpm", default=None, minimum=0, maximum=POSITIVE_INT_MAX, nullable=True)
    spec.models = r.str_list("models", [])
    spec.expires_at = _datetime(r, "expires_at")
    spec.revoked = r.bool("revoked", False)
    return spec


def _tenant(errors: list[str], path: str, data: object) -> TenantSpec | None:
    r = _Reader(errors, path, data, TENANT_KEYS)
    if not r.ok:
        return None
    spec = TenantSpec(path=path, name=r.str("name", required=True, max_length=100))
    _check_slug(r, "name", spec.name)
    spec.display_name = r.str("display_name", max_length=200)
    spec.enabled = r.bool("enabled", True)
    if r.has("budget") and r.raw("budget") is not None:
        budget = _Reader(errors, f"{path}.budget", r.raw("budget"), BUDGET_KEYS)
        spec.budget_limit_usd = budget.decimal(
            "limit_usd", default=None, places=4, max_digits=14, nullable=True
        )
        period = budget.str("period", default=BudgetPeriod.MONTHLY.value)
        if period not in BudgetPeriod.values:
            budget.error(
                f"must be one of {', '.join(BudgetPeriod.values)}, not {period!r}", "period"
            )
        else:
            spec.budget_period = period
    items = r.items("keys")
    if items is not None:
        spec.keys = [k for kpath, item in items if (k := _key(errors, kpath, item)) is not None]
        _duplicates(errors, "key name", [(k.path, k.name) for k in spec.keys if k.name])
    return spec


def parse_document(data: object) -> tuple[ConfigSpec, list[str]]:
    """Check a loaded document's shape; every problem is reported with its YAML path."""
    errors: list[str] = []
    spec = ConfigSpec()
    if data is None:
        return spec, errors
    if not isinstance(data, dict):
        return spec, [f"(document): must be a mapping with {', '.join(SECTIONS)}"]
    top = _Reader(errors, "", data, SECTIONS, what="top-level key")
    parsers = {"providers": _provider, "models": _model, "tenants": _tenant}
    for section, parse in parsers.items():
        items = top.items(section)
        if items is None:
            continue
        parsed = [obj for path, item in items if (obj := parse(errors, path, item)) is not None]
        setattr(spec, section, parsed)
        _duplicates(
            errors,
            f"{section[:-1]} name",
            [(obj.path, obj.name) for obj in parsed if obj.name],
        )
    return spec, errors
