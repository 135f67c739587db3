"""Re-encrypt every secret stored encrypted under the newest key, or report what is not.

Rotation, with any number of processes running:

1. ``rotate_encryption_key --generate-key`` prints a new key;
2. put it first in ``GATEWAY_ENCRYPTION_KEYS`` (``new,old``) on every process: the new
   key encrypts, both decrypt;
3. ``rotate_encryption_key`` re-encrypts every value under the new key;
4. ``rotate_encryption_key --check`` reports nothing left under a retired key;
5. drop the old key from ``GATEWAY_ENCRYPTION_KEYS``.

Encrypted columns are found by name: every text field ending in ``_encrypted`` of every
installed model, so a new one is rotated without changing this command.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.management import BaseCommand, CommandError
from django.db import models, transaction

from apps.audit.context import audit_context
from apps.audit.models import Source
from apps.audit.services import audit_record_event
from apps.core import crypto
from apps.core.services import config_changed

SUFFIX = "_encrypted"


@dataclass
class ColumnReport:
    label: str
    current: int = 0  # already under the newest key
    retired: int = 0  # under an older key that is still configured
    undecryptable: int = 0  # under no configured key: never touched
    rotated: int = 0


def encrypted_columns() -> Iterator[tuple[type[models.Model], models.Field]]:
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if field.name.endswith(SUFFIX) and isinstance(
                field, models.TextField | models.CharField
            ):
                yield model, field


def newest_key() -> Fernet:
    """The key new values are encrypted with (as :mod:`apps.core.crypto` picks it)."""
    keys = [k.strip() for k in settings.GATEWAY_ENCRYPTION_KEYS if k.strip()]
    if keys:
        return Fernet(keys[0].encode())
    path = settings.GATEWAY_ENCRYPTION_KEY_FILE
    if not path.exists():
        raise CommandError(f"no GATEWAY_ENCRYPTION_KEYS and no key file at {path}")
    return Fernet(path.read_bytes().strip())


def classify(token: str, newest: Fernet) -> str:
    try:
        newest.decrypt(token.encode())
        return "current"
    except InvalidToken:
        pass
    try:
        crypto.decrypt(token)
        return "retired"
    except crypto.DecryptionError:
        return "undecryptable"


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value (provider credentials, signing and webhook "
        "secrets, …) under the newest key of GATEWAY_ENCRYPTION_KEYS."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; report values still under a retired key (exit 1 if any).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Rows per transaction (default 500).",
        )
        parser.add_argument(
            "--generate-key",
            action="store_true",
            help="Print a new key to put first in GATEWAY_ENCRYPTION_KEYS, and exit.",
        )

    def handle(self, *args, check: bool, batch_size: int, generate_key: bool, **options):
        if generate_key:
            self.stdout.write(Fernet.generate_key().decode())
            self.stderr.write(
                "Put it first in GATEWAY_ENCRYPTION_KEYS (new,old) on every process, "
                "then run rotate_encryption_key."
            )
            return
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        crypto.reset_keys()  # read the keys as configured now, not as first loaded
        newest = newest_key()
        reports = [
            self._column(model, field, newest, check=check, batch_size=batch_size)
            for model, field in encrypted_columns()
        ]
        for report in reports:
            self.stdout.write(
                f"{report.label}: {report.rotated} re-encrypted, "
                f"{report.current} already current, {report.retired} under a retired key, "
                f"{report.undecryptable} undecryptable"
            )
        rotated = sum(r.rotated for r in reports)
        retired = sum(r.retired for r in reports)
        broken = sum(r.undecryptable for r in reports)
        if rotated:
            # Gateways reload routing and keys, so they hold the new ciphertext before
            # the old key is dropped.
            config_changed()
            with audit_context(actor="rotate_encryption_key", source=Source.SYSTEM):
                audit_record_event(
                    object_type="core.encryptionkey",
                    object_id="newest",
                    object_repr=f"re-encrypted {rotated} value(s) under the newest key",
                    changes={r.label: [None, r.rotated] for r in reports if r.rotated},
                )
        if broken:
            raise CommandError(
                f"{broken} value(s) decrypt under no configured key: they were left as they "
                "are. Was a retired key removed too early?"
            )
        if check and retired:
            raise CommandError(f"{retired} value(s) are still under a retired key")
        summary = "nothing under a retired key" if check else f"{rotated} value(s) re-encrypted"
        self.stdout.write(self.style.SUCCESS(summary))

    def _column(
        self,
        model: type[models.Model],
        field: models.Field,
        newest: Fernet,
        *,
        check: bool,
        batch_size: int,
    ) -> ColumnReport:
        report = ColumnReport(label=f"{model._meta.label}.{field.name}")
        manager = model._base_manager
        rows = manager.exclude(**{field.name: ""}).exclude(**{f"{field.name}__isnull": True})
        last_pk = None
        while True:
            with transaction.atomic():
                batch = rows.order_by("pk")
                if last_pk is not None:
                    batch = batch.filter(pk__gt=last_pk)
                if not check:
                    # Lock the rows: a credential changed meanwhile is not overwritten.
                    batch = batch.select_for_update()
                values = list(batch.values_list("pk", field.attname)[:batch_size])
                if not values:
                    return report
                for pk, token in values:
                    state = classify(token, newest)
                    if state == "current":
                        report.current += 1
                    elif state == "undecryptable":
                        report.undecryptable += 1
                    elif check:
                        report.retired += 1
                    else:
                        # No signals: the secret itself did not change.
                        manager.filter(pk=pk).update(**{field.attname: crypto.reencrypt(token)})
                        report.rotated += 1
                last_pk = values[-1][0]
