"""Writing the audit trail: snapshots, diffs with secrets masked, and the event itself."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from apps.audit.context import current
from apps.audit.models import Action, AuditEvent
from apps.core import secrets
from apps.tenants.models import Tenant

MASK = "***"
# Field-name words that mark a value as secret material: the value is never recorded,
# only whether it is set. Whole words, so "max_output_tokens" is not a "token".
SECRET_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "credential",
        "credentials",
        "password",
        "passwd",
        "token",
        "hash",
        "encrypted",
        "ciphertext",
        "apikey",
        "signature",
        "private",
    }
)
# Inside JSON values (options, metadata) keys are free-form: mask more eagerly there,
# e.g. options.headers["api-key"] or ["Authorization"].
NESTED_SECRET_WORDS = SECRET_WORDS | {"key", "authorization", "cookie", "auth", "pass"}
# Never worth a diff line: the event has its own time, the object id is on the event.
IGNORED_FIELDS = frozenset({"created_at", "updated_at"})

_camel = re.compile(r"([a-z0-9])([A-Z])")
_separators = re.compile(r"[^a-z0-9]+")


def _words(name: str) -> set[str]:
    """``"webhook_secret_encrypted"``, ``"X-Api-Key"``, ``"clientSecret"`` → their words,
    plus adjacent pairs joined (``api_key`` → ``apikey``)."""
    words = [w for w in _separators.split(_camel.sub(r"\1_\2", name).lower()) if w]
    return set(words) | {a + b for a, b in itertools.pairwise(words)}


def is_secret_field(name: str) -> bool:
    return bool(_words(name) & SECRET_WORDS)


def mask_value(name: str, value: Any) -> Any:
    """What the audit trail may keep of ``value`` stored in field ``name``.

    A reference (``credential_ref = "env:OPENAI_KEY"``) says where a secret lives, not
    what it is, and is kept so an auditor sees it change; hashes, ciphertext and
    anything else secret become ``"***"`` when set.
    """
    if is_secret_field(name):
        if value in ("", None):
            return value
        if name.endswith("_ref") and isinstance(value, str) and secrets.is_reference(value):
            return value
        return MASK
    return _mask_nested(value)


def _mask_nested(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                MASK
                if _words(str(k)) & NESTED_SECRET_WORDS and v not in ("", None)
                else _mask_nested(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_nested(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _audited_fields(model: type[models.Model]) -> list[models.Field]:
    return [
        f for f in model._meta.concrete_fields if not f.primary_key and f.name not in IGNORED_FIELDS
    ]


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The instance's stored values by field name (foreign keys as ids), unmasked."""
    return {f.name: f.value_from_object(instance) for f in _audited_fields(type(instance))}


def snapshot_stored(model: type[models.Model], pk: Any) -> dict[str, Any] | None:
    """The row as the database has it now (before a save overwrites it)."""
    stored = model._base_manager.filter(pk=pk).first()
    return None if stored is None else snapshot(stored)


def _same(field: models.Field, old: Any, new: Any) -> bool:
    if old == new:
        return True
    try:
        return field.to_python(old) == field.to_python(new)
    except Exception:  # a value the field cannot parse differs by definition
        return False


def diff(
    model: type[models.Model],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    only: frozenset[str] | None = None,
) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields that differ, secrets masked, JSON-ready."""
    changes: dict[str, list[Any]] = {}
    for field in _audited_fields(model):
        name = field.name
        if only is not None and name not in only and field.attname not in only:
            continue
        old = before.get(name) if before is not None else None
        new = after.get(name) if after is not None else None
        if before is not None and after is not None and _same(field, old, new):
            continue
        if before is None and after is not None and new in ("", None, [], {}):
            continue  # a create lists what was set, not every empty default
        if after is None and before is not None and old in ("", None, [], {}):
            continue
        changes[name] = [
            _jsonable(mask_value(name, old)) if before is not None else None,
            _jsonable(mask_value(name, new)) if after is not None else None,
        ]
    return changes


def tenant_of(instance: models.Model) -> int | None:
    """The tenant an object belongs to: itself, its ``tenant``, or its parent's tenant."""
    if isinstance(instance, Tenant):
        return instance.pk
    meta = instance._meta
    names = {f.name for f in meta.concrete_fields}
    if "tenant" in names:
        return getattr(instance, "tenant_id", None)
    for field in meta.concrete_fields:
        if not field.many_to_one:
            continue
        related = field.related_model
        if related is Tenant or not any(f.name == "tenant" for f in related._meta.concrete_fields):
            continue
        parent_id = getattr(instance, field.attname)
        if parent_id is None:
            continue
        cached = meta.get_field(field.name).get_cached_value(instance, default=None)
        if cached is not None:
            return cached.tenant_id
        return (
            related._base_manager.filter(pk=parent_id).values_list("tenant_id", flat=True).first()
        )
    return None


# Names of tenants being deleted, for the rows their cascade deletes after the tenant's
# own row is gone (the order of a cascade is Django's to choose).
_deleted_tenant_names: dict[int, str] = {}


def remember_tenant_name(tenant: Tenant) -> None:
    _deleted_tenant_names[tenant.pk] = tenant.name


def _tenant(instance: models.Model, action: str) -> tuple[int | None, str]:
    """(tenant id the event may point at, tenant name it keeps)."""
    tenant_id = tenant_of(instance)
    if tenant_id is None:
        return None, ""
    if isinstance(instance, Tenant):
        # A deleted tenant's row is gone: keep its name only.
        return (None if action == Action.DELETE else tenant_id), instance.name
    cached = None
    if any(f.name == "tenant" for f in instance._meta.concrete_fields):
        cached = instance._meta.get_field("tenant").get_cached_value(instance, default=None)
    if cached is not None and action != Action.DELETE:
        return tenant_id, cached.name
    name = Tenant._base_manager.filter(pk=tenant_id).values_list("name", flat=True).first()
    if name is None:  # deleted with its tenant, after the tenant's row
        return None, _deleted_tenant_names.get(tenant_id, "")
    return tenant_id, name


def _object_repr(instance: models.Model) -> str:
    try:
        text = str(instance)
    except Exception:  # a __str__ reaching a related row that is already gone
        text = f"{instance._meta.label} #{instance.pk}"
    return text[:200]


def audit_record(
    *,
    instance: models.Model,
    action: str,
    changes: dict[str, list[Any]],
) -> AuditEvent:
    """Write one event for ``instance``, attributed to the current audit context.

    Runs inside the caller's transaction: when the change rolls back, so does its event.
    """
    context = current()
    actor, user_id = context.who()
    tenant_id, tenant_name = _tenant(instance, action)
    return AuditEvent.objects.create(
        actor=actor[:150],
        actor_user_id=user_id,
        source=context.source,
        tenant_id=tenant_id,
        tenant_name=tenant_name[:100],
        action=action,
        object_type=instance._meta.label_lower,
        object_id=str(instance.pk)[:64],
        object_repr=_object_repr(instance),
        changes=changes,
        request_id=context.request_id[:128],
        ip=context.ip,
    )


def audit_record_event(
    *,
    object_type: str,
    object_id: str,
    object_repr: str,
    action: str = Action.UPDATE,
    changes: dict[str, list[Any]] | None = None,
) -> AuditEvent:
    """An event about something that is not a row, e.g. re-encrypting every secret."""
    context = current()
    actor, user_id = context.who()
    return AuditEvent.objects.create(
        actor=actor[:150],
        actor_user_id=user_id,
        source=context.source,
        action=action,
        object_type=object_type[:100],
        object_id=object_id[:64],
        object_repr=object_repr[:200],
        changes=_jsonable(changes or {}),
        request_id=context.request_id[:128],
        ip=context.ip,
    )
