"""``manage.py recompute_costs --from 2025-01-01 --to 2025-02-01 [--model M] --note "…"``

After a price correction (add or fix a ``Price`` with the right ``effective_from``),
reprice the usage of a past window. Rollups and open invoices follow; closed invoices
stay as they are. Each run is recorded as a ``CostRecomputation`` (shown in the admin).
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

from django.core.management import BaseCommand, CommandError
from django.db import transaction
from django.utils.dateparse import parse_date, parse_datetime

from apps.billing.services import cost_recompute
from apps.core.errors import GatewayError


def parse_moment(value: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 datetime (UTC when it names no zone)."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"Not a date or datetime: {value!r} (use e.g. 2025-01-31).")
        moment = datetime(day.year, day.month, day.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class _DryRun(Exception):
    pass


class Command(BaseCommand):
    help = (
        "Recompute the cost of usage records in [--from, --to) from the price history, "
        "then update rollups and open invoices, and record the recomputation."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="date_from", required=True, help="Window start.")
        parser.add_argument("--to", dest="date_to", required=True, help="Window end (exclusive).")
        parser.add_argument("--model", default="", help="Only records served by this model.")
        parser.add_argument("--note", default="", help="Why: kept with the recomputation.")
        parser.add_argument("--actor", default="", help="Who (default: the OS user).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report the change, then roll it back."
        )

    def handle(self, *args, date_from: str, date_to: str, **options):
        start, end = parse_moment(date_from), parse_moment(date_to)
        if end <= start:
            raise CommandError("--to must be after --from.")
        actor = options["actor"] or f"manage.py ({getpass.getuser()})"
        try:
            with transaction.atomic():
                result = cost_recompute(
                    window_start=start,
                    window_end=end,
                    model_name=options["model"] or None,
                    actor=actor,
                    note=options["note"],
                )
                if options["dry_run"]:
                    raise _DryRun
        except _DryRun:
            pass
        except GatewayError as exc:
            raise CommandError(exc.message)
        difference = result.new_total_usd - result.old_total_usd
        self.stdout.write(
            f"{result.records} record(s) from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
            f"{' served by ' + result.model_name if result.model_name else ''}: "
            f"{result.old_total_usd:f} → {result.new_total_usd:f} USD ({difference:+f})."
        )
        if "Closed invoices left unchanged" in result.note:
            self.stdout.write(result.note.rsplit("\n", 1)[-1])
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was changed.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Recorded as recomputation #{result.pk}."))
