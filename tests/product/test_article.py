"""The product article's worked example, through the API (docs/product.md sections 2-6)."""

from __future__ import annotations

from tests.conftest import ok


def test_article_example_100_credits_5_assigned_then_started(org, make_content):
    course = make_content(1, "Sexual Harassment Prevention")
    org.buy(100)
    people = [org.employee(f"Person {i}") for i in range(5)]
    created = org.assign(course, people)["data"]
    assert len(created) == 5

    balance = org.balance()
    assert (balance["credits"], balance["assigned"], balance["available"]) == (100, 5, 95)

    for assignment in created:
        ok(org.act(assignment["id"], "start"))
    balance = org.balance()
    assert (balance["credits"], balance["assigned"], balance["available"]) == (95, 0, 95)
    assert balance["overage_credits_this_period"] == 0
