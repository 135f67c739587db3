from __future__ import annotations

import uuid

from django.db import transaction

from apps.core.models import ConfigState

ROUTING = "routing"


def config_changed(*, name: str = ROUTING) -> None:
    """Mark a configuration area changed once the current transaction commits.

    Processes that cached the area notice the new token at their next poll; bumping
    only after commit keeps them from caching the old rows under the new token.
    """

    def bump() -> None:
        ConfigState.objects.update_or_create(name=name, defaults={"token": uuid.uuid4().hex})

    transaction.on_commit(bump)
