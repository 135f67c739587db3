"""Every create, update and delete of the audited models becomes an :class:`AuditEvent`.

The receivers are module-level functions (signals hold receivers weakly) connected per
model with a ``dispatch_uid``, so a model is watched once however often ``ready()`` runs.
They fire for the admin, the API, config as code, services called from anywhere, and
plain ``Model.save()``; only ``QuerySet.update()`` and raw SQL bypass them, which no
write path of these models uses.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from apps.audit.models import Action, AuditEvent
from apps.audit.services import (
    audit_record,
    diff,
    remember_tenant_name,
    snapshot,
    snapshot_stored,
)
from apps.tenants.models import Tenant

# The one list of audited models. An app that does not exist (yet) is skipped, so a new
# feature's models only need their label here.
AUDITED_MODELS = (
    "tenants.Tenant",
    "tenants.Membership",
    "keys.ApiKey",
    "providers.Provider",
    "providers.Model",
    "providers.Deployment",
    "providers.Price",
    "billing.Budget",
    "billing.ModelRateLimit",
    "guardrails.Policy",
    "experiments.Experiment",
    "experiments.Variant",
)

_BEFORE = "_audit_before"


def audited_models() -> list[type[models.Model]]:
    found = []
    for label in AUDITED_MODELS:
        try:
            found.append(apps.get_model(label))
        except (LookupError, ValueError):
            continue
    return found


def audit_pre_save(
    sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any
) -> None:
    if raw or instance._state.adding or instance.pk is None:
        return
    setattr(instance, _BEFORE, snapshot_stored(sender, instance.pk))


def audit_post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool = False,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    if raw:
        return
    before = instance.__dict__.pop(_BEFORE, None)
    if created or before is None:
        audit_record(
            instance=instance, action=Action.CREATE, changes=diff(sender, None, snapshot(instance))
        )
        return
    changes = diff(sender, before, snapshot(instance), only=update_fields)
    if changes:  # a save that changed nothing is not an event
        audit_record(instance=instance, action=Action.UPDATE, changes=changes)


def tenant_pre_delete(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    remember_tenant_name(instance)


def audit_post_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    audit_record(
        instance=instance, action=Action.DELETE, changes=diff(sender, snapshot(instance), None)
    )
    if isinstance(instance, Tenant):
        # As on_delete=SET_NULL would: the tenant's events (also those its cascade wrote
        # before the tenant's row went) keep its name but no longer point at a row that
        # is gone. The database triggers allow exactly this change.
        AuditEvent._base_manager.filter(tenant_id=instance.pk).update(tenant=None)


def connect_audited_models() -> None:
    pre_delete.connect(tenant_pre_delete, sender=Tenant, dispatch_uid="audit-pre-delete-tenant")
    for model in audited_models():
        label = model._meta.label
        pre_save.connect(audit_pre_save, sender=model, dispatch_uid=f"audit-pre-save-{label}")
        post_save.connect(audit_post_save, sender=model, dispatch_uid=f"audit-post-save-{label}")
        post_delete.connect(
            audit_post_delete, sender=model, dispatch_uid=f"audit-post-delete-{label}"
        )
