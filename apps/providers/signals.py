from __future__ import annotations

from apps.providers.models import Model
from apps.providers.services import price_sync_from_model


def model_saved(sender: type, instance: Model, raw: bool = False, **kwargs: object) -> None:
    """Every change of a model's list price starts a new entry in its price history."""
    if not raw:
        price_sync_from_model(model=instance)
