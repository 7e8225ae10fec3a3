"""The audit trail: who did what, when, from where. Append-only (the database refuses
UPDATE and DELETE, see migration 0002)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    # "operator", "operator:<username>", "api_key:key_3", "user:usr_5", "anonymous", ...
    actor = models.CharField(max_length=200)
    # e.g. "org.create", "credits.adjust", "pricing.set", "api_key.create", "auth.denied".
    action = models.CharField(max_length=64)
    # The org concerned, if any (kept as a plain id so denied probes of unknown ids fit too).
    org_id = models.BigIntegerField(null=True, blank=True)
    target = models.CharField(max_length=200, blank=True, default="")
    details = models.JSONField(default=dict)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True, default="")
    request_path = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["-id"], name="audit_newest"),
            models.Index(fields=["org_id", "-id"], name="audit_org"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target}"
