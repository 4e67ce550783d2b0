"""``manage.py orq_sync_contacts``: resync users on demand. Thin: flags in, summary out."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ... import bulk, sync


def parse_since(value: str) -> dt.datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--since {value!r} is not a date (YYYY-MM-DD[THH:MM])")
        moment = dt.datetime.combine(day, dt.time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = (
        "Sync users to Orq contacts: every user that should be synced (unchanged ones are "
        "skipped by hash), or with --pending only the rows that are pending or failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would be synced; no HTTP call, no state change.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Send even users whose contact is unchanged since the last sync.",
        )
        parser.add_argument(
            "--pending",
            action="store_true",
            help="Only pending/failed rows (and any a dead worker left in flight).",
        )
        parser.add_argument(
            "--user",
            action="append",
            dest="users",
            metavar="PK",
            default=[],
            help="Only this user (repeatable).",
        )
        parser.add_argument(
            "--since",
            type=parse_since,
            metavar="DATE",
            help="Only users changed (or joined) since DATE.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Users read per database query (default 500).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=16,
            help="Parallel HTTP calls in this process (default 16).",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Queue changed users to Celery in chunks instead of syncing here.",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Plain lines instead of a progress bar."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1 or options["concurrency"] < 1:
            raise CommandError("--batch-size and --concurrency must be at least 1")
        if options["pending"] and (options["users"] or options["since"] or options["dry_run"]):
            raise CommandError("--pending cannot be combined with --user, --since or --dry-run")
        progress, close = self._progress(options)
        try:
            if options["pending"]:
                report = bulk.sync_pending_rows(
                    concurrency=options["concurrency"], progress=progress
                )
            else:
                report = bulk.sync_all(
                    bulk.users_queryset(options["users"], options["since"]),
                    force=options["force"],
                    dry_run=options["dry_run"],
                    enqueue=options["enqueue"],
                    batch_size=options["batch_size"],
                    concurrency=options["concurrency"],
                    progress=progress,
                )
        finally:
            close()
        self._summary(report, options["dry_run"])
        if report.interrupted:
            raise CommandError("Interrupted; run the command again to resume.", returncode=130)
        if report.failed:
            raise CommandError(f"{report.failed} user(s) failed to sync.", returncode=1)

    def _progress(self, options: dict[str, Any]) -> tuple[bulk.Progress, Any]:
        if not options["no_progress"] and self.stdout.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                bar = tqdm(unit=" users", file=sys.stderr, dynamic_ncols=True)
                return bar.update, bar.close
        done = [0]

        def plain(n: int) -> None:
            before, done[0] = done[0], done[0] + n
            if before // 1000 != done[0] // 1000:
                self.stdout.write(f"... {done[0]} users processed")

        return plain, lambda: None

    def _summary(self, report: bulk.BulkReport, dry_run: bool) -> None:
        counts = report.counts
        labels = [
            (sync.WOULD_SYNC, "would sync"),
            (sync.SYNCED, "synced"),
            ("queued", "queued"),
            (sync.UNCHANGED, "unchanged"),
            (sync.SKIPPED, "skipped"),
            (sync.DELETED, "deleted"),
            (sync.BUSY, "busy (another worker)"),
            (sync.GONE, "gone"),
            (sync.FAILED, "failed"),
        ]
        parts = [
            f"{label}: {counts[key]}"
            for key, label in labels
            if counts[key] or key in (sync.SYNCED, sync.UNCHANGED, sync.FAILED)
        ]
        prefix = "Dry run. " if dry_run else ""
        line = f"{prefix}{', '.join(parts)}; {report.calls} API call(s) in {report.elapsed:.1f}s"
        style = self.style.ERROR if report.failed else self.style.SUCCESS
        self.stdout.write(style(line))
        for error in report.errors:
            self.stderr.write(f"  {error}")
