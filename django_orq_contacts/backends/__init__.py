"""Swappable sync backends, chosen by dotted path like Django's EMAIL_BACKEND."""

from __future__ import annotations

from django.utils.module_loading import import_string

from ..conf import get_setting
from .base import BaseBackend, UpsertResult

__all__ = ["BaseBackend", "UpsertResult", "get_backend"]


def get_backend() -> BaseBackend:
    backend_class = get_setting("BACKEND")
    if isinstance(backend_class, str):
        backend_class = import_string(backend_class)
    backend: BaseBackend = backend_class()
    return backend
