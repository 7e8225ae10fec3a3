"""The hot paths' statements are prepared on PostgreSQL (DB_PREPARE_THRESHOLD), so the server
plans them once per connection, and answer the same every time."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import Api, ok


def _prepared(fragment: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.postgres_only
def test_authentication_and_balance_read_are_prepared_after_a_few_runs(org):
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # psycopg forgets its own list too
    api = Api(org.key)
    assert _prepared("credits_balance") == 0
    answers = [ok(api.get(org.path("/balance"))) for _ in range(8)]
    assert all(a == answers[0] for a in answers)
    assert _prepared('FROM "tenancy_apikey" k') == 1
    assert _prepared("COALESCE(SUM(e.overage_credits)") == 1
