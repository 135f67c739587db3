"""Receivers shared by the apps: configuration changes reach every gateway process."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from apps.core.services import config_changed


def routing_changed(**kwargs: object) -> None:
    config_changed()


def watch_routing(*models: type) -> None:
    """Bump the routing token whenever one of ``models`` is saved or deleted (admin included)."""
    for model in models:
        label = model._meta.label
        post_save.connect(routing_changed, sender=model, dispatch_uid=f"routing-save-{label}")
        post_delete.connect(routing_changed, sender=model, dispatch_uid=f"routing-delete-{label}")
