"""A custom external id for the example: the pk with a prefix (ORQ_EXTERNAL_ID_PREFIX).

The demo uses it when it talks to a real Orq workspace, so its users ("1", "2", ...) cannot
overwrite the contacts of a real site that uses plain pks.
"""

from typing import Any

from django.conf import settings


def prefixed_external_id(user: Any) -> str:
    return f"{settings.ORQ_EXTERNAL_ID_PREFIX}{user.pk}"
