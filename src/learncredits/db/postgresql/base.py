"""Django's PostgreSQL backend, with a connection health check that needs no round trip.

Why: with ``CONN_HEALTH_CHECKS`` Django checks a persistent connection at the first query
of every request, and its PostgreSQL backend does that by running ``SELECT 1``: one more
round trip, and on a threaded web process one more release and re-acquisition of the GIL,
for every API request (measured: about a fifth of a balance read's web CPU together with
the CSP and messages work, see docs/benchmarks.md). The failures the check exists for
announce themselves on the socket: a server that restarts, a backend that is terminated
or times out, a pooler that closes the connection all send an error or close it, which
makes the idle socket readable. So: a connection psycopg already knows is broken is
unusable; an idle connection with nothing to read is usable; anything else (something
arrived while idle) gets Django's own ``SELECT 1``. A silently vanished peer (no FIN, no
RST) is caught by neither check before the TCP timeout, so nothing is lost there.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            # Only an idle connection can be judged by its socket.
            return bool(super().is_usable())
        poller = select.poll()
        try:
            poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
            arrived = poller.poll(0)
        except (OSError, ValueError):
            return False
        if not arrived:
            return True
        return bool(super().is_usable())
