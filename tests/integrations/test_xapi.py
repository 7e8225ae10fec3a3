"""xAPI statements (docs/api.md "xAPI statements", docs/integrations.md).

``POST /api/v1/xapi/statements`` (one statement or a list) and ``PUT ...?statementId=``, with
``X-Experience-API-Version: 1.0.x`` and HTTP Basic auth (user: the org id, password: one of
its API keys). launched/initialized/attempted/progressed start the actor's open assignment of
the content whose ``xapi_activity_id`` is the object id; completed/passed complete it,
charging once. A statement id seen before has no second effect; the same id with another
body is refused (409). Unknown actors, activities and verbs are stored and ignored.

Most tests use Django's test client; the last ones run the app under a real WSGI server
(pytest-django's ``live_server``) and send statements with the ``tincan`` client library
(Rustici's TinCanPython 1.0.0, which works on Python 3.11), exactly as a content player would.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from tincan import Activity, Agent, LanguageMap, RemoteLRS, Statement, Verb

from learncredits import ids
from learncredits.credits.models import LedgerEntry
from learncredits.integrations.models import XapiStatement
from tests.conftest import OPERATOR_TOKEN, Api, OrgHandle, Response, ok

pytestmark = pytest.mark.django_db

ADL = "http://adlnet.gov/expapi/verbs/"
ACTIVITY = "https://lms.example.com/courses/fire-safety-2031"
START_VERBS = ["launched", "initialized", "attempted", "progressed"]
COMPLETE_VERBS = ["completed", "passed"]


# --- helpers --------------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def statement(
    verb: str, email: str, activity: str = ACTIVITY, sid: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "actor": {"objectType": "Agent", "name": "Learner", "mbox": f"mailto:{email}"},
        "verb": {"id": verb if verb.startswith("http") else ADL + verb, "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": activity},
        **extra,
    }
    if sid is not None:
        body["id"] = sid
    return body


class Lrs:
    """An org's xAPI client over Django's test client."""

    def __init__(self, org: OrgHandle, *, user: str | None = None, password: str | None = None):
        self.api = Api(None)
        self.auth = basic(user or org.id, password or org.key)

    def headers(self, version: str | None) -> dict[str, str]:
        headers = {"Authorization": self.auth}
        if version is not None:
            headers["X-Experience-API-Version"] = version
        return headers

    def post(self, payload: Any, version: str | None = "1.0.3", raw: str | None = None) -> Response:
        return self.api.request(
            "POST", "/xapi/statements", payload, raw=raw, headers=self.headers(version)
        )

    def put(self, sid: str, payload: Any, version: str | None = "1.0.3") -> Response:
        return self.api.request(
            "PUT", f"/xapi/statements?statementId={sid}", payload, headers=self.headers(version)
        )


@pytest.fixture
def course(make_content: Callable[..., str]) -> str:
    return make_content(credit_cost=4, title="Fire safety", xapi_activity_id=ACTIVITY)


def learner(org: OrgHandle, name: str) -> tuple[str, str]:
    email = f"{name.lower()}.{uuid.uuid4().hex[:6]}@example.com"
    return org.employee(name, email), email


def assignment(org: OrgHandle, assignment_id: str) -> dict[str, Any]:
    return ok(org.api.get(org.path(f"/assignments/{assignment_id}")))


def consume_entries(org: OrgHandle) -> int:
    return LedgerEntry.objects.filter(org_id=ids.decode("org", org.id), type="consume").count()


def counters(org: OrgHandle) -> tuple[int, int]:
    balance = org.balance()
    return balance["credits"], balance["assigned"]


# --- start and complete ---------------------------------------------------------------------------


def test_content_carries_its_xapi_activity_id(operator: Api, course: str) -> None:
    listed = ok(operator.get("/content"))["data"]
    [mine] = [c for c in listed if c["id"] == course]
    assert mine["xapi_activity_id"] == ACTIVITY


def test_launched_starts_and_completed_completes_charging_once(org: OrgHandle, course: str) -> None:
    org.buy(10)
    emp, email = learner(org, "Kim")
    [a] = org.assign(course, [emp])["data"]
    lrs = Lrs(org)

    launched = statement("launched", email, sid=str(uuid.uuid4()))
    response = lrs.post(launched)
    assert ok(response) == [launched["id"]]
    assert response.headers["X-Experience-API-Version"].startswith("1.0")
    got = assignment(org, a["id"])
    assert (got["status"], got["charged_credits"], got["overage_credits"]) == ("started", 4, 0)
    assert counters(org) == (6, 0)

    # The same statement again: no second effect.
    assert ok(lrs.post(launched)) == [launched["id"]]
    assert lrs.put(launched["id"], launched).status == 204
    assert counters(org) == (6, 0) and consume_entries(org) == 1

    # More progress: still one charge.
    ok(lrs.post(statement("progressed", email)))
    assert assignment(org, a["id"])["status"] == "started"
    ok(lrs.post(statement("completed", email)))
    got = assignment(org, a["id"])
    assert got["status"] == "completed" and got["completed_at"] is not None
    ok(lrs.post(statement("passed", email)))
    assert assignment(org, a["id"])["status"] == "completed"
    assert counters(org) == (6, 0) and consume_entries(org) == 1
    assert XapiStatement.objects.count() == 4


@pytest.mark.parametrize("verb", START_VERBS)
def test_each_start_verb_starts(org: OrgHandle, course: str, verb: str) -> None:
    org.buy(4)
    emp, email = learner(org, "Start")
    [a] = org.assign(course, [emp])["data"]
    ok(Lrs(org).post(statement(verb, email)))
    assert assignment(org, a["id"])["status"] == "started"
    assert counters(org) == (0, 0)


@pytest.mark.parametrize("verb", COMPLETE_VERBS)
def test_each_complete_verb_completes_a_never_started_assignment_charging_once(
    org: OrgHandle, course: str, verb: str
) -> None:
    org.buy(5)
    emp, email = learner(org, "Done")
    [a] = org.assign(course, [emp])["data"]
    ok(Lrs(org).post(statement(verb, email)))
    got = assignment(org, a["id"])
    assert (got["status"], got["charged_credits"]) == ("completed", 4)
    assert got["started_at"] is not None
    assert counters(org) == (1, 0) and consume_entries(org) == 1


def test_a_list_of_statements_in_one_post(org: OrgHandle, course: str) -> None:
    org.buy(10)
    (e1, m1), (e2, m2) = learner(org, "One"), learner(org, "Two")
    [a1] = org.assign(course, [e1])["data"]
    [a2] = org.assign(course, [e2])["data"]
    batch = [statement("initialized", m1), statement("completed", m2, sid=str(uuid.uuid4()))]
    returned = ok(Lrs(org).post(batch))
    assert len(returned) == 2 and returned[1] == batch[1]["id"]
    assert all(uuid.UUID(sid) for sid in returned)
    assert assignment(org, a1["id"])["status"] == "started"
    assert assignment(org, a2["id"])["status"] == "completed"
    assert counters(org) == (2, 0) and consume_entries(org) == 2


def test_a_refused_statement_refuses_its_whole_batch(org: OrgHandle, course: str) -> None:
    org.buy(10)
    emp, email = learner(org, "Batch")
    [a] = org.assign(course, [emp])["data"]
    batch = [statement("launched", email), {"actor": {"mbox": f"mailto:{email}"}}]
    response = Lrs(org).post(batch)
    assert 400 <= response.status < 500 and response.code == "validation_error"
    assert assignment(org, a["id"])["status"] == "assigned"
    assert XapiStatement.objects.count() == 0


# --- PUT with statementId, replays and conflicts --------------------------------------------------


def test_put_with_statement_id_and_replays(org: OrgHandle, course: str) -> None:
    org.buy(10)
    emp, email = learner(org, "Put")
    [a] = org.assign(course, [emp])["data"]
    lrs = Lrs(org)
    sid = str(uuid.uuid4())
    body = statement("attempted", email)  # the id is in the URL only
    response = lrs.put(sid, body)
    assert (response.status, response.raw) == (204, b"")
    assert response.headers["X-Experience-API-Version"].startswith("1.0")
    assert assignment(org, a["id"])["status"] == "started"
    assert XapiStatement.objects.get().statement_id == sid

    # Replayed by PUT (with or without the id in the body) and by POST: no second effect.
    assert lrs.put(sid, body).status == 204
    assert lrs.put(sid.upper(), {**body, "id": sid}).status == 204
    assert ok(lrs.post({**body, "id": sid})) == [sid]
    assert counters(org) == (6, 0) and consume_entries(org) == 1
    assert XapiStatement.objects.count() == 1


def test_the_same_id_with_another_body_is_refused(org: OrgHandle, course: str) -> None:
    org.buy(10)
    emp, email = learner(org, "Conflict")
    [a] = org.assign(course, [emp])["data"]
    lrs = Lrs(org)
    sid = str(uuid.uuid4())
    assert lrs.put(sid, statement("launched", email)).status == 204
    for response in (
        lrs.put(sid, statement("completed", email)),
        lrs.post(statement("completed", email, sid=sid)),
        lrs.post([statement("completed", email), statement("passed", email, sid=sid)]),
    ):
        assert (response.status, response.code) == (409, "invalid_state"), response.body
    got = assignment(org, a["id"])
    assert got["status"] == "started"  # neither completion took effect
    assert XapiStatement.objects.count() == 1


def test_statement_ids_are_per_org(
    org: OrgHandle, make_org: Callable[..., OrgHandle], course: str
) -> None:
    other = make_org("Other")
    sid = str(uuid.uuid4())
    for o in (org, other):
        o.buy(4)
        emp, email = learner(o, "Same")
        [a] = o.assign(course, [emp])["data"]
        assert Lrs(o).put(sid, statement("launched", email)).status == 204
        assert assignment(o, a["id"])["status"] == "started"


def test_a_mismatched_or_malformed_id_is_refused(org: OrgHandle, course: str) -> None:
    _, email = learner(org, "Ids")
    lrs = Lrs(org)
    mismatch = lrs.put(str(uuid.uuid4()), statement("launched", email, sid=str(uuid.uuid4())))
    not_uuid = lrs.post(statement("launched", email, sid="not-a-uuid"))
    bad_put = lrs.put("12345", statement("launched", email))
    for response in (mismatch, not_uuid, bad_put):
        assert 400 <= response.status < 500 and response.code == "validation_error"
    assert XapiStatement.objects.count() == 0


# --- what is ignored, and what is refused ---------------------------------------------------------


def test_unknown_actors_activities_and_verbs_are_accepted_and_change_nothing(
    org: OrgHandle,
    make_org: Callable[..., OrgHandle],
    course: str,
    make_content: Callable[..., str],
    snapshot: Callable[[], Any],
) -> None:
    org.buy(10)
    emp, email = learner(org, "Known")
    org.assign(course, [emp])
    _, not_assigned = learner(org, "Idle")  # an employee with nothing assigned
    other = make_org("Other")
    _, outsider = learner(other, "Outsider")  # an employee of another org
    other_course = make_content(credit_cost=1, xapi_activity_id="https://lms.example.com/other")
    assert other_course
    before = snapshot()
    lrs = Lrs(org)
    ignored = [
        statement("launched", "nobody@example.com"),
        statement("launched", outsider),
        statement("launched", not_assigned),
        statement("launched", email, activity="https://lms.example.com/unknown"),
        statement("launched", email, activity="https://lms.example.com/other"),
        statement("http://example.com/verbs/liked", email),
        statement("experienced", email),
        statement("failed", email),
        {**statement("launched", email), "actor": {"account": {"homePage": "x", "name": "kim"}}},
        {**statement("launched", email), "actor": {"mbox_sha1sum": "ab" * 20}},
    ]
    ok(lrs.post(ignored[0]))
    assert lrs.put(str(uuid.uuid4()), ignored[1]).status == 204
    returned = ok(lrs.post(ignored[2:]))
    assert len(returned) == len(ignored) - 2
    assert snapshot() == before
    stored = XapiStatement.objects.all()
    assert stored.count() == len(ignored)  # stored, and ignored
    assert all(s.outcome.startswith("ignored") for s in stored), [s.outcome for s in stored]


def test_version_header_is_required(org: OrgHandle, course: str) -> None:
    org.buy(10)
    emp, email = learner(org, "Version")
    [a] = org.assign(course, [emp])["data"]
    lrs = Lrs(org)
    for version in (None, "", "0.95", "2.0.0"):
        response = lrs.post(statement("launched", email), version=version)
        assert 400 <= response.status < 500, (version, response.status)
        response = lrs.put(str(uuid.uuid4()), statement("launched", email), version=version)
        assert 400 <= response.status < 500, (version, response.status)
    assert assignment(org, a["id"])["status"] == "assigned"
    assert XapiStatement.objects.count() == 0
    assert lrs.post(statement("launched", email), version="1.0.0").status == 200
    assert assignment(org, a["id"])["status"] == "started"


def test_bad_bodies_are_refused_cleanly(org: OrgHandle) -> None:
    lrs = Lrs(org)
    for raw in ("{", "null", "42", '"text"', "[]", json.dumps([{"verb": {}}]), "\xff"):
        response = lrs.post(None, raw=raw)
        assert 400 <= response.status < 500, (raw, response.status, response.body)
    for payload in ({"actor": {}, "verb": {"id": 7}, "object": {}}, {"actor": "x"}):
        assert 400 <= lrs.post(payload).status < 500
    assert XapiStatement.objects.count() == 0


def test_basic_auth_with_the_org_id_and_one_of_its_keys(
    org: OrgHandle, make_org: Callable[..., OrgHandle], course: str
) -> None:
    org.buy(10)
    emp, email = learner(org, "Auth")
    [a] = org.assign(course, [emp])["data"]
    other = make_org("Other")
    body = statement("launched", email)
    attempts = [
        Lrs(org, password=org.key + "x"),  # wrong password
        Lrs(org, password=other.key),  # another org's key
        Lrs(org, user=other.id),  # this org's key, another org's id
        Lrs(org, user="nonsense"),
        Lrs(org, password=OPERATOR_TOKEN),  # the operator token is not an org key
    ]
    for lrs in attempts:
        assert (lrs.post(body).status, lrs.put(str(uuid.uuid4()), body).status) == (401, 401)
    for header in (None, f"Bearer {org.key}", "Basic !!!", basic(org.id, "")):
        api = Api(None)
        headers = {"X-Experience-API-Version": "1.0.3"}
        if header is not None:
            headers["Authorization"] = header
        response = api.request("POST", "/xapi/statements", body, headers=headers)
        assert response.status == 401, header
    assert assignment(org, a["id"])["status"] == "assigned"
    assert XapiStatement.objects.count() == 0
    # A second key of the org works too.
    second = ok(org.operator.post(org.path("/api-keys"), {"name": "lms"}), 201)["key"]
    assert Lrs(org, password=second).post(body).status == 200
    assert assignment(org, a["id"])["status"] == "started"


# --- the tincan client against a live server ------------------------------------------------------
#
# live_server needs a transactional database, which Django empties after the test with DELETE;
# on SQLite the append-only DELETE triggers refuse that (PostgreSQL empties with TRUNCATE,
# which fires no row trigger). So on SQLite the DELETE triggers are dropped just before the
# flush and put back (the very same SQL) before the next such test and after the module.


def tincan_statement(verb: str, email: str, sid: uuid.UUID | None = None) -> Statement:
    return Statement(
        id=sid,
        actor=Agent(mbox=f"mailto:{email}", name="Learner"),
        verb=Verb(id=ADL + verb, display=LanguageMap({"en-US": verb})),
        object=Activity(id=ACTIVITY),
    )


@pytest.mark.django_db(transaction=True)
def test_the_tincan_client_starts_and_completes_over_http(
    flushable: None,
    live_server: Any,
    make_org: Callable[..., OrgHandle],
    make_content: Callable[..., str],
) -> None:
    course = make_content(credit_cost=4, title="Fire safety", xapi_activity_id=ACTIVITY)
    org = make_org("Tincan")
    org.buy(10)
    (e1, m1), (e2, m2) = learner(org, "Tin"), learner(org, "Can")
    [a1] = org.assign(course, [e1])["data"]
    [a2] = org.assign(course, [e2])["data"]
    endpoint = live_server.url + "/api/v1/xapi/"
    lrs = RemoteLRS(endpoint=endpoint, version="1.0.3", username=org.id, password=org.key)

    # save_statement with an id: PUT ?statementId=, version 1.0.3.
    launched = tincan_statement("launched", m1, uuid.uuid4())
    response = lrs.save_statement(launched)
    assert response.success, (response.response.status, response.data)
    assert response.request.method == "PUT"
    assert response.request.query_params["statementId"] == launched.id
    assert response.response.status == 204
    assert assignment(org, a1["id"])["status"] == "started"
    assert counters(org) == (6, 4)

    # The player retries it: no second effect.
    assert lrs.save_statement(launched).success
    assert counters(org) == (6, 4) and consume_entries(org) == 1

    # The same id with another verb: refused.
    conflict = tincan_statement("completed", m1, launched.id)
    refused = lrs.save_statement(conflict)
    assert not refused.success and refused.response.status == 409
    assert assignment(org, a1["id"])["status"] == "started"

    # A statement without an id is POSTed; the LRS answers its id.
    completed = tincan_statement("completed", m1)
    response = lrs.save_statement(completed)
    assert response.success and response.request.method == "POST"
    assert isinstance(completed.id, uuid.UUID)
    assert XapiStatement.objects.filter(statement_id=str(completed.id)).exists()
    assert assignment(org, a1["id"])["status"] == "completed"

    # A list in one POST: start and complete the second assignment, charged once.
    batch = [tincan_statement("initialized", m2), tincan_statement("passed", m2)]
    response = lrs.save_statements(batch)
    assert response.success, (response.response.status, response.data)
    assert all(isinstance(s.id, uuid.UUID) for s in batch)
    got = assignment(org, a2["id"])
    assert (got["status"], got["charged_credits"]) == ("completed", 4)
    assert counters(org) == (2, 0) and consume_entries(org) == 2

    # Unknown activity: accepted, nothing changes.
    unknown = tincan_statement("launched", m2)
    unknown.object = Activity(id="https://lms.example.com/not-ours")
    assert lrs.save_statement(unknown).success
    assert counters(org) == (2, 0)

    # Wrong credentials: 401, nothing stored.
    stored = XapiStatement.objects.count()
    wrong = RemoteLRS(endpoint=endpoint, version="1.0.3", username=org.id, password="lc_nope")
    denied = wrong.save_statement(tincan_statement("launched", m2, uuid.uuid4()))
    assert not denied.success and denied.response.status == 401
    assert XapiStatement.objects.count() == stored
