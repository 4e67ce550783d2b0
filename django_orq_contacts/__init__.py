"""Mirror a Django site's users as Orq.ai contacts, through Celery."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
