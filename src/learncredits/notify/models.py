"""The delivery side of the transactional outbox: emails, webhook endpoints and deliveries.

The ``Event`` rows themselves live in credits (credits/models.py), where the changes that
cause them are written. The worker turns events into ``EmailMessage`` and ``WebhookDelivery``
rows (in one transaction, marking the event dispatched) and delivers those with retries. A
crash anywhere loses nothing: undispatched events and undelivered messages are simply picked
up again.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from learncredits.credits.models import Event
from learncredits.secrets_at_rest import EncryptedCharField
from learncredits.tenancy.models import Organization


class Delivery(models.Model):
    """Shared bookkeeping of a message that is retried until delivered or given up."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Set while a worker is sending; another worker may take it over once it has passed.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class EmailMessage(Delivery):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="emails")
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.PROTECT)
    kind = models.CharField(max_length=64)
    recipients = models.JSONField()
    subject = models.CharField(max_length=300)
    text = models.TextField()
    html = models.TextField()

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="email_due", condition=Q(status="pending")
            ),
        ]
        constraints = [
            # One email per event and kind: dispatching an event twice cannot send twice.
            models.UniqueConstraint(fields=["org", "event", "kind"], name="email_once_per_event"),
        ]


class WebhookEndpoint(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="webhooks")
    url = models.URLField(max_length=2000)
    # Event types to send; empty means all.
    events = models.JSONField(default=list)
    # The ``whsec_`` signing secret. Every delivery is signed with the secret itself, so
    # unlike an API key it cannot be hashed; the column holds it Fernet-encrypted
    # (learncredits.secrets_at_rest), so a copy of the database does not carry it, while
    # ``endpoint.secret`` reads and sets the plain secret. Not editable, so no form (the
    # operator console included) ever shows it.
    secret = EncryptedCharField(max_length=255, editable=False)
    active = models.BooleanField(default=True)
    consecutive_failures = models.IntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)


class WebhookDelivery(Delivery):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries"
    )
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="+")
    event_type = models.CharField(max_length=64)
    last_status_code = models.IntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="webhook_due", condition=Q(status="pending")
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_endpoint_id"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "endpoint", "event"], name="webhook_once_per_event"
            ),
        ]

    @property
    def webhook_id(self) -> str:
        """The same on every retry: receivers deduplicate on it."""
        return f"msg_evt_{self.event_id}"
