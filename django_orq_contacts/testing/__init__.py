"""Test helpers for projects using django_orq_contacts (and for this package's own tests)."""
