from __future__ import annotations

from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class ConfigState(models.Model):
    """One row per configuration area; its token changes whenever that area changes.

    Gateway processes keep keys and routing in memory and compare this token
    every few seconds: one cheap query per process instead of one per request,
    and no dependency on a shared cache for invalidation.
    """

    name = models.CharField(max_length=50, primary_key=True)
    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}@{self.token[:8]}"
