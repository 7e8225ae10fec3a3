"""xAPI statements received from an LMS or content player, stored once per statement id."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from learncredits.tenancy.models import Organization


class XapiStatement(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    statement_id = models.CharField(max_length=64)
    # SHA-256 of the canonical JSON: the same id with another body is refused.
    body_hash = models.CharField(max_length=64)
    body = models.JSONField()
    verb = models.CharField(max_length=500, blank=True, default="")
    actor_email = models.CharField(max_length=254, blank=True, default="")
    activity_id = models.CharField(max_length=2000, blank=True, default="")
    # What it did: started, completed, or why it was ignored.
    outcome = models.CharField(max_length=200)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "xAPI statement"
        verbose_name_plural = "xAPI statements"
        constraints = [
            models.UniqueConstraint(fields=["org", "statement_id"], name="xapi_statement_once"),
        ]
