"""Signals for projects to hook into the sync (documented in the README, "Hooks").

- ``pre_contact_sync(sender=UserModel, user, payload)``: before a call; a receiver may edit
  ``payload`` (a dict of the contact fields) in place, or return ``False`` to skip this sync.
- ``contact_synced(sender=UserModel, user, payload, orq_id)``: after Orq accepted the contact.
- ``contact_sync_failed(sender=UserModel, user, error, will_retry)``: after a failed attempt.
"""

from __future__ import annotations

from django.dispatch import Signal

pre_contact_sync = Signal()
contact_synced = Signal()
contact_sync_failed = Signal()
