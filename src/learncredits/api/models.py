"""Idempotency records: the first answer to a POST, replayed for the same key and body."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    # "org_<id>" for an org key, "operator" for the operator token.
    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # HMAC-SHA256 (keyed from SECRET_KEY) of method, path and body: the same key with another
    # request is refused. Keyed because a body may carry a password.
    request_hash = models.CharField(max_length=64)
    # Claimed (0, empty) and filled with the answer inside the request's one transaction,
    # so nobody outside ever sees a claimed-but-unanswered record.
    status_code = models.IntegerField(default=0)
    content_type = models.CharField(max_length=100, default="")
    # The answer's body as a Fernet token (learncredits.secrets_at_rest): it may show a new
    # API key or webhook secret once, and the database must not keep those in clear.
    body = models.BinaryField(default=b"")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]
