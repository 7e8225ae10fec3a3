"""Housekeeping of the API's own tables, run periodically by the worker.

Idempotency records are only needed for ``LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS``; the
middleware deletes an expired record only when its key is used again, so without this purge
the table would keep every answer ever given (encrypted, but still kept) and grow forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from learncredits.api.models import IdempotencyRecord

BATCH_SIZE = 500
MAX_BATCHES = 200


def purge_expired_idempotency_records(
    now: datetime | None = None, *, batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES
) -> int:
    """Delete idempotency records older than the TTL; returns how many were deleted.

    Deletes in batches of ``batch_size``, each its own short statement and transaction, so
    it never holds locks (on SQLite, the database's one write lock) for long while requests
    are claiming keys; and at most ``max_batches`` per call, so a large backlog is worked
    off over several worker passes instead of stalling the pass that found it.
    """
    ttl = timedelta(seconds=settings.LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS)
    cutoff = (now or timezone.now()) - ttl
    expired = IdempotencyRecord.objects.filter(created_at__lt=cutoff)
    deleted = 0
    for _ in range(max_batches):
        pks = list(expired.order_by("created_at").values_list("pk", flat=True)[:batch_size])
        if not pks:
            break
        # The cutoff again: a key reused meanwhile was deleted and claimed anew (fresh).
        count, _ = expired.filter(pk__in=pks).delete()
        deleted += count
        if len(pks) < batch_size:
            break
    return deleted
