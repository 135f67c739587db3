from __future__ import annotations

from apps.core.models import ConfigState


def config_token(*, name: str) -> str | None:
    return ConfigState.objects.filter(name=name).values_list("token", flat=True).first()
