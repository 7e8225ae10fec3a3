"""No request input makes a page or an API operation answer 5xx: a property test over every
dashboard and console page's query parameters and form fields and every API query parameter.

Nothing here is a hand-written list of parameters. The targets are discovered:

- pages, from the URL configuration (``django.urls.get_resolver()``: the ``web`` namespace and
  the operator console's pages that need no object id, plus its own views);
- what each page reads, by scanning its view function (and the module functions it calls) with
  ``ast`` for ``request.GET.get("...")``, ``request.GET["..."]``, ``getlist`` and the same on
  ``request.POST``, so a parameter added tomorrow is fuzzed without anyone listing it;
- the fields of the forms each page serves, and the query parameters of its links, by fetching
  the page signed in as who uses it (org admin, learner, operator) and parsing the HTML with
  ``html.parser``; the values found there (hidden fields, options, buttons) are mixed in so that
  generated requests reach past "which form is this" into the parsing of each field;
- API operations and their query parameters, from the served ``/api/v1/openapi.json``, called
  with the operator token and with an org's key.

Values are odd on purpose: digits of other scripts (``'٣'``, fullwidth digits), characters
that ``str.isdigit()`` accepts and ``int()`` refuses (``'²'``, ``'①'``: all of them, from the
Unicode database), NUL, lone surrogates (sent percent-encoded as the raw bytes ``%ED%A0%80``;
no client can encode them as UTF-8), 10,000-character strings, numbers past a 64-bit column,
negative numbers, blanks, ``1_000``, ``1e3``. Requests go through Django's test client with
``raise_request_exception=False``, so a server error is a 500 the test reports with its input.

Each example runs in a savepoint that is rolled back (a failed statement on PostgreSQL would
otherwise poison every later request of the test); the world is built once per module.
"""

from __future__ import annotations

import ast
import base64
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from django.contrib.admin.views import main as changelist
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache as django_cache
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, get_resolver, resolve
from django.urls.exceptions import Resolver404
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from learncredits import ids
from learncredits.catalog.models import Content
from learncredits.credits.models import Assignment, LedgerEntry
from tests.api.test_isolation import PAGE_LEARNER, PAGE_PUBLIC, PAGES, _walk
from tests.conftest import OPERATOR_TOKEN, Api, module_world, ok, rolled_back_like_autocommit

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Generated examples per target, after the explicit ones (see SWEEP): modest, so that the
# file runs in about a minute and a half per database.
PAGE_EXAMPLES = 10
CONSOLE_EXAMPLES = 3  # about 90 console pages, most of them Django's own
API_EXAMPLES = 8
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

# --- odd values -----------------------------------------------------------------------------------

_ALL = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
# isdigit() says yes, int() says no: superscripts, circled and parenthesised digits, ...
NOT_DECIMAL_DIGITS = [c for c in _ALL if c.isdigit() and not c.isdecimal()]
# int() accepts these: Arabic-Indic, Devanagari, fullwidth, mathematical digits, ...
OTHER_DECIMALS = [c for c in _ALL if c.isdecimal() and not c.isascii()]
del _ALL

ODD_VALUES = [
    "\u00b2",  # superscript two: isdigit() but not int()
    "\u0663",  # Arabic-Indic three: int() gives 3
    "\u2460",  # circled one
    "\uff11",  # fullwidth one
    "\U0001d7d7",  # mathematical bold nine
    "1\u00b2",
    "1_000",
    "1e3",
    "1.5",
    "+5",
    "-1",
    "-0",
    "0",
    " 7 ",
    "\u00a07",
    "",
    " ",
    "\x00",
    "7\x00",
    "\ud800",  # a lone surrogate: percent-encoded as raw bytes
    "9" * 30,
    "-" + "9" * 30,
    str(2**63),
    str(2**63 - 1),
    str(-(2**63) - 1),
    "1" * 10_000,
    "x" * 10_000,
    "NaN",
    "<b>&amp;'\"",
]

# Explicit examples, one of each kind, before hypothesis generates its own: every target is sent
# each SWEEP value in all its fields at once, and each SWEEP_WITH_REAL value in the fields its
# forms offer no value for (the others keep an offered one, e.g. which form is posted).
SWEEP = ["\u00b2", "\u0663", "\uff11", "\x00", "\ud800", "9" * 30, "-" + "9" * 30, "1" * 10_000]
SWEEP += ["1_000", "1e3", " ", "-1", "1 \u00b2\n\u0663 2"]  # the last: lines of numbers
SWEEP_WITH_REAL = ["\u00b2", "\u0663", "\x00", "9" * 30]

_digitish = st.text(
    st.sampled_from(NOT_DECIMAL_DIGITS + OTHER_DECIMALS) | st.sampled_from("0123456789-_e. "),
    min_size=1,
    max_size=8,
)
ODD: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(ODD_VALUES),
    _digitish,
    st.integers().map(str),
    st.text(max_size=40),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)


def value_for(real: list[str]) -> st.SearchStrategy[str]:
    """An odd value, or one a real form or link offers (so a request gets past the check of
    which form it is, or which object it names, into the parsing of the next field)."""
    return st.one_of(st.sampled_from(real), ODD) if real else ODD


def form_data(names: dict[str, list[str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Any subset of the fields, each with one to three values (``getlist`` reads them all)."""
    if not names:
        return st.just([])
    optional = {
        name: st.lists(value_for(real), min_size=1, max_size=3) for name, real in names.items()
    }
    return st.fixed_dictionaries({}, optional=optional).map(  # type: ignore[arg-type]
        lambda chosen: [(name, v) for name, values in chosen.items() for v in values]
    )


def sweep(names: dict[str, list[str]]) -> list[list[tuple[str, str]]]:
    """The explicit examples of a target: each SWEEP value in every field at once; then, where
    the target's forms offer values (which form, which object), those with the odd value in
    each other field."""
    if not names:
        return [[]]
    found = [[(name, odd) for name in names] for odd in SWEEP]
    if any(names.values()):
        found += [
            [(name, real[0] if real else odd) for name, real in names.items()]
            for odd in SWEEP_WITH_REAL
        ]
    return found


def _raw(text: str) -> str:
    # surrogatepass: a lone surrogate becomes the bytes ED A0 80, which the server must decode
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_raw(k)}={_raw(v)}" for k, v in pairs)


# --- what a view reads: a static scan of its source -----------------------------------------------


def _is_querydict(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and node.attr in {"GET", "POST"}:
        return node.attr
    return None


def _strings(node: ast.AST, loops: dict[str, list[str]]) -> list[str]:
    """The names a key expression can take: a string literal, or a loop variable over a
    tuple of them (``for field in ("content", "employee"): request.GET.get(field)``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        return loops.get(node.id, [])
    return []


def _loop_values(function: ast.AST) -> dict[str, list[str]]:
    loops: dict[str, list[str]] = {}
    for node in ast.walk(function):
        if (
            isinstance(node, ast.For)
            and isinstance(node.target, ast.Name)
            and isinstance(node.iter, ast.Tuple | ast.List)
        ):
            values = [e.value for e in node.iter.elts if isinstance(e, ast.Constant)]
            loops[node.target.id] = [v for v in values if isinstance(v, str)]
    return loops


@cache
def _module_functions(module_name: str) -> dict[str, ast.FunctionDef]:
    import importlib

    source = inspect.getsource(importlib.import_module(module_name))
    tree = ast.parse(source)
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


@cache
def _arguments(module_name: str) -> dict[str, dict[str, list[str]]]:
    """Function -> parameter -> the string literals its callers in the module pass for it
    (a helper called as ``helper(request, "q")`` reads ``q`` through its parameter)."""
    functions = _module_functions(module_name)
    bound: dict[str, dict[str, list[str]]] = {}
    for caller in functions.values():
        for node in ast.walk(caller):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            callee = functions.get(node.func.id)
            if callee is None:
                continue
            names = [a.arg for a in callee.args.posonlyargs + callee.args.args]
            pairs = list(zip(names, node.args, strict=False))
            pairs += [(k.arg, k.value) for k in node.keywords if k.arg]
            for name, value in pairs:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    bound.setdefault(callee.name, {}).setdefault(name, []).append(value.value)
    return bound


def scan_reads(view: Callable[..., Any]) -> dict[str, set[str]]:
    """The GET and POST names a view reads, itself or through functions of its module it calls."""
    function = inspect.unwrap(view)
    module = getattr(function, "__module__", "") or ""
    found: dict[str, set[str]] = {"GET": set(), "POST": set()}
    if not module.startswith("learncredits."):
        return found  # Django's own views: their fields come from the pages' forms
    functions = _module_functions(module)
    todo, seen = [function.__name__], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        node_of = functions[name]
        loops = {**_arguments(module).get(name, {}), **_loop_values(node_of)}
        for node in ast.walk(node_of):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                method = _is_querydict(node.func.value)
                if method and node.func.attr in {"get", "getlist"} and node.args:
                    found[method].update(_strings(node.args[0], loops))
            if isinstance(node, ast.Subscript):
                method = _is_querydict(node.value)
                if method:
                    found[method].update(_strings(node.slice, loops))
            if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In):
                method = _is_querydict(node.comparators[0])
                if method:
                    found[method].update(_strings(node.left, loops))
    return found


def scan_choices(view: Callable[..., Any], parameter: str) -> list[str]:
    """The string literals a view compares a path parameter with (``verb == "cancel"``)."""
    function = inspect.unwrap(view)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    choices = []
    for node in ast.walk(tree):
        named = isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
        if named and node.left.id == parameter:  # type: ignore[attr-defined]
            for other in node.comparators:  # type: ignore[attr-defined]
                if isinstance(other, ast.Constant) and isinstance(other.value, str):
                    choices.append(other.value)
    return choices


# --- the pages ------------------------------------------------------------------------------------

ADMIN, LEARNER, ANONYMOUS, OPERATOR = "org-admin", "learner", "anonymous", "operator"
# Console routes with a path parameter that we can fill (our own views in the console).
CONSOLE_PARAMS = {"org_id"}


@dataclass(frozen=True)
class Page:
    method: str
    route: str  # as in the URL configuration
    who: str
    params: tuple[str, ...]
    view: Callable[..., Any] = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} /{self.route}"


def _page_params(route: str) -> tuple[str, ...]:
    names = re.findall(r"<(?:\w+:)?(\w+)>", route) + re.findall(r"\(\?P<(\w+)>", route)
    return tuple(dict.fromkeys(names))


def _view_of(pattern: URLPattern) -> Callable[..., Any]:
    callback = pattern.callback
    return getattr(callback, "view_class", None) or callback


def discover_pages() -> list[Page]:
    pages: dict[str, Page] = {}
    for route, namespace, pattern in _walk(get_resolver().url_patterns):
        params = _page_params(route)
        if namespace == "web":
            category = PAGES.get(route)
            who = {PAGE_PUBLIC: ANONYMOUS, PAGE_LEARNER: LEARNER}.get(category or "", ADMIN)
        elif namespace == "admin":
            who = OPERATOR
            if set(params) - CONSOLE_PARAMS or "logout" in route:
                continue  # object pages of the console are Django's; sign-out ends the session
        else:
            continue
        for method in ("GET", "POST"):
            page = Page(method, route, who, params, _view_of(pattern))
            pages.setdefault(page.label, page)
    return list(pages.values())


PAGE_LIST = discover_pages()
WEB_PAGES = [p for p in PAGE_LIST if p.who != OPERATOR]
CONSOLE_PAGES = [p for p in PAGE_LIST if p.who == OPERATOR]
# The console's change lists read these (Django's own names), besides their filters' links.
CHANGELIST_PARAMS = [
    getattr(changelist, name)
    for name in dir(changelist)
    if name.endswith("_VAR") and isinstance(getattr(changelist, name), str)
] + [changelist.ERROR_FLAG]


class FormParser(HTMLParser):
    """Forms (action, method, field names and the values offered) and query-string links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, str, dict[str, list[str]]]] = []
        self.links: list[str] = []
        self._form: dict[str, list[str]] | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {}
            self.forms.append((a.get("action", ""), a.get("method", "get").upper(), self._form))
        elif tag == "a" and a.get("href", "").startswith("?"):
            self.links.append(a["href"])
        elif self._form is not None and tag in {"input", "select", "textarea", "button"}:
            name = a.get("name")
            if not name or a.get("type") == "file" or name == "csrfmiddlewaretoken":
                return
            values = self._form.setdefault(name, [])
            if "value" in a:
                values.append(a["value"])
            if tag == "select":
                self._select = name
        elif tag == "option" and self._form is not None and self._select and "value" in a:
            self._form[self._select].append(a["value"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


# --- the world ------------------------------------------------------------------------------------


@dataclass
class World:
    org: str
    key: str
    users: dict[str, Any]
    path_values: dict[str, str]  # path parameter -> a real value (dashboard pks)
    api_values: dict[str, list[str]]  # API path and query parameter -> real values
    fields: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # page label -> fields


def _build_world() -> World:
    operator = Api(OPERATOR_TOKEN)
    content = ok(
        operator.post(
            "/content",
            {
                "title": "Fuzz 101",
                "premium": True,
                "credit_cost": 1,
                "xapi_activity_id": "https://fuzz.example/xapi/input",
            },
        ),
        201,
    )["id"]
    org = ok(operator.post("/orgs", {"name": "Input Fuzz", "billing_email": "f@fuzz.example"}), 201)
    base = f"/orgs/{org['id']}"
    key = ok(operator.post(base + "/api-keys", {"name": "fuzz"}), 201)
    api = Api(key["key"])
    purchase = ok(api.post(base + "/purchases", {"quantity": 30}), 201)
    employees = [
        ok(api.post(base + "/employees", {"name": f"E{n}", "email": f"e{n}@fuzz.example"}), 201)[
            "id"
        ]
        for n in range(3)
    ]
    made = ok(
        api.post(base + "/assignments", {"content_id": content, "employee_ids": employees}), 201
    )
    assignments = [a["id"] for a in made["data"]]
    ok(api.post(f"{base}/assignments/{assignments[1]}/start"))
    webhook = ok(
        api.post(base + "/webhooks", {"url": "https://hooks.fuzz.example/in", "events": []}), 201
    )["id"]
    users = {}
    for who, email, role in ((ADMIN, "admin@fuzz.example", "admin"),
                             (LEARNER, "e0@fuzz.example", "learner")):  # fmt: skip
        body = {"email": email, "name": "Person", "role": role, "password": "Correct-Horse-42"}
        ok(operator.post(f"/orgs/{org['id']}/users", body), 201)
        users[who] = get_user_model().objects.get(username=email)
    users[OPERATOR] = get_user_model().objects.create_superuser(
        "operator@fuzz.example", password="Operator-Password-42"
    )
    pk = {name: value.split("_", 1)[1] for name, value in (
        ("org_id", org["id"]), ("employee_id", employees[0]),
        ("assignment_id", assignments[0]), ("invoice_id", purchase["invoice_id"]),
    )}  # fmt: skip
    return World(
        org=org["id"],
        key=key["key"],
        users=users,
        path_values={
            **pk,
            "uidb64": "MQ",
            "token": "set-password",
            "intent_id": purchase["provider_reference"],
        },
        api_values={
            "org_id": [org["id"]],
            "employee_id": employees,
            "assignment_id": assignments,
            "purchase_id": [purchase["id"]],
            "invoice_id": [purchase["invoice_id"]],
            "webhook_id": [webhook],
            "key_id": [key["id"]],
            "content_id": [content],
            "period": ["2024-02"],
            "from": ["2024-01-01"],
            "to": ["2024-03-31"],
        },
    )


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    with module_world(django_db_blocker):
        yield _build_world()


def signed_in(world: World, who: str) -> Client:
    client = Client(raise_request_exception=False)
    if who != ANONYMOUS:
        client.force_login(world.users[who], backend=MODEL_BACKEND)
    return client


def page_url(world: World, page: Page, verb: str = "") -> str:
    values = {**world.path_values, "verb": verb}
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], page.route)
    return "/" + path.replace("^", "").replace("$", "")


def _label_of(path: str, method: str) -> str | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return f"{method} /{match.route}"


def _learn_forms(world: World) -> None:
    """Fetch every GET page once as its user and record, for each (method, route), the fields
    its forms send and the query parameters its links carry, with the values offered."""
    if world.fields:
        return
    found: dict[str, dict[str, list[str]]] = {}
    for page in PAGE_LIST:
        if page.method != "GET":
            continue
        url = page_url(world, page, "cancel")
        with rolled_back_like_autocommit():
            response = signed_in(world, page.who).get(url)
            transaction.set_rollback(True)
        if response.get("Content-Type", "").split(";")[0] != "text/html":
            continue
        parser = FormParser()
        parser.feed(response.content.decode(errors="replace"))
        for action, method, fields in parser.forms:
            target = urlsplit(action).path or url
            label = _label_of(target, "POST" if method == "POST" else "GET")
            if label is None:
                continue
            for name, values in fields.items():
                found.setdefault(label, {}).setdefault(name, []).extend(values)
        for link in parser.links:
            for name, value in parse_qsl(link[1:], keep_blank_values=True):
                found.setdefault(page.label, {}).setdefault(name, []).append(value)
    world.fields = {
        label: {name: sorted(set(v))[:20] for name, v in names.items()}
        for label, names in found.items()
    }


def fields_of(world: World, page: Page) -> dict[str, list[str]]:
    """Everything this (method, page) reads or is sent: scanned names, form fields, links."""
    _learn_forms(world)
    names: dict[str, list[str]] = {n: [] for n in sorted(scan_reads(page.view)[page.method])}
    if page.who == OPERATOR and page.method == "GET" and page.route.endswith("/"):
        names.update({n: names.get(n, []) for n in CHANGELIST_PARAMS})
    for name, values in world.fields.get(page.label, {}).items():
        names[name] = sorted(set(names.get(name, []) + values))
    return names


def check(response: Any, what: str) -> None:
    """No 5xx; on failure the message carries the request and the server's exception."""
    if response.streaming:
        b"".join(response.streaming_content)
    exc_info = getattr(response, "exc_info", None)
    cause = repr(exc_info[1]) if exc_info else ""
    assert response.status_code < 500, f"{response.status_code} for {what}: {cause}"


def send(client: Client, method: str, url: str, pairs: list[tuple[str, str]]) -> Any:
    body = encode(pairs)
    with rolled_back_like_autocommit():
        django_cache.clear()  # rate limits and the like start fresh for every example
        if method == "GET":
            response = client.get(url, QUERY_STRING=body)
        else:
            response = client.post(url, body, content_type="application/x-www-form-urlencoded")
        check(response, f"{method} {url} {pairs!r}"[:2000])
        transaction.set_rollback(True)
    return response


def _fuzz_page(world: World, page: Page, examples: int) -> None:
    names = fields_of(world, page)
    verbs = scan_choices(page.view, "verb") if "verb" in page.params else [""]

    @settings(FUZZ, max_examples=examples)
    @given(pairs=form_data(names), verb=st.sampled_from(verbs or [""]))
    def run(pairs: list[tuple[str, str]], verb: str) -> None:
        send(signed_in(world, page.who), page.method, page_url(world, page, verb), pairs)

    for number, pairs in enumerate(sweep(names)):
        run = example(pairs=pairs, verb=(verbs or [""])[number % len(verbs or [""])])(run)
    run()


# --- the property tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", WEB_PAGES, ids=lambda p: p.label)
def test_no_dashboard_input_is_a_server_error(world, page):
    _fuzz_page(world, page, PAGE_EXAMPLES)


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=lambda p: p.label)
def test_no_console_input_is_a_server_error(world, page):
    _fuzz_page(world, page, CONSOLE_EXAMPLES)


def _openapi() -> dict[str, Any]:
    return Client().get("/api/v1/openapi.json").json()


@cache
def api_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation of the served document with query parameters."""
    document = _openapi()
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if any(p["in"] == "query" for p in operation.get("parameters", []))
    ]


def _api_ids() -> list[str]:
    # The document is served by the app, no database needed: read it at collection time.
    return [f"{m} {p}" for m, p in api_operations()]


@pytest.mark.parametrize("operation", _api_ids())
def test_no_api_query_parameter_is_a_server_error(world, operation):
    method, path = operation.split(" ", 1)
    spec = _openapi()["paths"][path][method.lower()]
    names: dict[str, list[str]] = {}
    for parameter in spec.get("parameters", []):
        if parameter["in"] != "query":
            continue
        schema = parameter.get("schema", {})
        real = [str(v) for v in schema.get("enum", [])] + world.api_values.get(
            parameter["name"], []
        )
        if "default" in schema and schema["default"] is not None:
            real.append(str(schema["default"]))
        names[parameter["name"]] = real
    url = re.sub(
        r"\{(\w+)\}", lambda m: world.api_values.get(m.group(1), ["x"])[0], path
    ).removesuffix("/")
    clients = {
        "operator": {"HTTP_AUTHORIZATION": f"Bearer {OPERATOR_TOKEN}"},
        "org-key": {"HTTP_AUTHORIZATION": f"Bearer {world.key}"},
    }
    if "/xapi/" in path:  # HTTP Basic: the org id and one of its keys
        basic = base64.b64encode(f"{world.org}:{world.key}".encode()).decode()
        clients = {
            "xapi": {
                "HTTP_AUTHORIZATION": f"Basic {basic}",
                "HTTP_X_EXPERIENCE_API_VERSION": "1.0.3",
            }
        }

    @settings(FUZZ, max_examples=API_EXAMPLES)
    @given(pairs=form_data(names), who=st.sampled_from(sorted(clients)))
    def run(pairs: list[tuple[str, str]], who: str) -> None:
        query = encode(pairs)
        client = Client(raise_request_exception=False)
        with rolled_back_like_autocommit():
            django_cache.clear()
            response = client.generic(method, url, QUERY_STRING=query, **clients[who])
            check(response, f"{who} {method} {url}?{query}"[:2000])
            transaction.set_rollback(True)

    callers = sorted(clients)
    for number, pairs in enumerate(sweep(names)):
        run = example(pairs=pairs, who=callers[number % len(callers)])(run)
    run()


def test_the_discovery_is_not_vacuous(world):
    """The scan and the forms find what we know is there (so a broken scan cannot pass)."""
    by_label = {p.label: p for p in PAGE_LIST}
    assert {"content", "employee", "status", "employee_email", "page"} <= set(
        fields_of(world, by_label["GET /assignments"])
    )
    assert {"before", "type"} <= set(fields_of(world, by_label["GET /settings/billing"]))
    billing_post = fields_of(world, by_label["POST /settings/billing"])
    assert {"form", "alert_threshold", "below_available", "max_credits"} <= set(billing_post)
    assert {"alerts", "auto_top_up"} <= set(billing_post["form"])  # values of hidden fields
    assert {"content", "employee", "emails", "confirm"} <= set(
        fields_of(world, by_label["POST /assign"])
    )
    assert "assignment" in fields_of(world, by_label["POST /learn"])
    assert {"cancel", "reassign"} <= set(
        scan_choices(by_label["POST /assignments/<int:assignment_id>/<str:verb>"].view, "verb")
    )
    assert "q" in fields_of(world, by_label["GET /admin/tenancy/organization/"])
    assert "credits" in fields_of(
        world, by_label["POST /admin/tenancy/organization/<int:org_id>/adjust/"]
    )
    assert len(WEB_PAGES) >= 40 and len(CONSOLE_PAGES) >= 30
    assert len(api_operations()) >= 10
    assert NOT_DECIMAL_DIGITS and "\u00b2" in NOT_DECIMAL_DIGITS and "\u0663" in OTHER_DECIMALS


# --- the defects found, pinned --------------------------------------------------------------------


@pytest.fixture
def admin(world: World) -> Client:
    return signed_in(world, ADMIN)


def test_an_assignment_filter_that_is_no_id_is_ignored(world, admin):
    response = admin.get("/assignments", {"content": "\u00b2"})
    assert response.status_code == 200
    shown = {a.pk for a in response.context["page"]}
    every = Assignment.objects.filter(org__name="Input Fuzz").values_list("pk", flat=True)
    assert shown == set(every)  # the filter is ignored: every assignment is listed


def test_a_ledger_page_before_that_is_no_id_is_the_newest_page(world, admin):
    response = admin.get("/settings/billing", {"before": "\u00b2"})
    assert response.status_code == 200
    assert response.context["ledger_paged"] is False
    newest = LedgerEntry.objects.filter(org__name="Input Fuzz").order_by("-pk")[0]
    assert response.context["ledger"][0] == newest


def test_the_assign_page_with_a_content_that_is_no_id_selects_nothing(world, admin):
    response = admin.get("/assign", {"content": "\u00b2"})
    assert response.status_code == 200
    assert response.context["selected_content"] is None


def test_assigning_a_content_that_is_no_id_says_pick_a_content_item(world, admin):
    employee = world.path_values["employee_id"]
    before = Assignment.objects.count()
    response = admin.post("/assign", {"content": "\u00b2", "employee": employee, "confirm": "1"})
    assert response.status_code == 200
    assert "Pick a content item." in response.content.decode()
    assert Assignment.objects.count() == before


def test_a_preview_for_an_employee_that_is_no_id_is_not_ready(world, admin):
    content = str(Content.objects.get(title="Fuzz 101").pk)
    response = admin.post("/assign/preview", {"content": content, "employee": "\u00b2"})
    assert response.status_code == 200
    assert response.context["ready"] is False


@pytest.mark.parametrize("odd", ["\u0663", "1_000", "9" * 30, "\uff11", "1e3"])
def test_a_quantity_of_other_digits_or_past_the_column_is_refused_with_the_forms_message(
    world, admin, odd
):
    response = admin.post("/buy", {"quantity": odd})
    assert response.status_code == 422  # the API's status for a refused value
    assert "quantity must be a whole number between 1 and" in response.content.decode()


@pytest.mark.parametrize("odd", ["\u00b2", "9" * 30, "-1", "\ud800"])
def test_a_learner_posting_an_assignment_that_is_no_id_gets_404(world, odd):
    learner = signed_in(world, LEARNER)
    response = learner.post(
        "/learn", encode([("assignment", odd)]), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 404


def test_picking_an_employee_past_the_column_is_no_server_error(world, admin):
    content = str(Content.objects.get(title="Fuzz 101").pk)
    response = admin.post("/assign", {"content": content, "employee": "9" * 30, "confirm": "1"})
    assert response.status_code == 200
    assert "Pick at least one employee." in response.content.decode()


@pytest.mark.parametrize(
    ("url", "name"), [("/employees", "q"), ("/assign", "q"), ("/assignments", "employee_email")]
)
def test_a_nul_in_a_search_is_no_server_error(world, admin, url, name):
    """Found by the property test on PostgreSQL, which refuses NUL even in a query."""
    response = admin.get(url, QUERY_STRING=encode([(name, "e0\x00")]))
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_a_nul_in_a_console_filter_or_search_is_refused(world):
    """Found by the property test on PostgreSQL: Django admin's list filters and search."""
    operator = signed_in(world, OPERATOR)
    for query in ("kind__exact=%00", "q=%00", "%00=1"):
        response = operator.get("/admin/notify/alert/", QUERY_STRING=query)
        assert response.status_code == 400, query


def test_a_sign_in_name_of_ten_thousand_characters_is_a_failed_sign_in(world):
    """Found by the property test on PostgreSQL: recording the failure overflowed a column."""
    response = Client(raise_request_exception=False).post(
        "/login", {"username": "1" * 10_000, "password": "x"}
    )
    assert response.status_code == 200  # the form again, with its error


def test_an_id_past_64_bits_in_a_console_multiple_choice_is_a_form_error(world):
    """Found by the property test on SQLite, whose driver refused the number (OverflowError)."""
    operator = signed_in(world, OPERATOR)
    response = operator.post("/admin/auth/group/add/", {"name": "g", "permissions": "-" + "9" * 30})
    assert response.status_code == 200  # the form again, with "select a valid choice"
    assert not Group.objects.filter(name="g").exists()


def test_an_integer_in_lookup_ignores_values_no_column_can_hold(world):
    real = Permission.objects.order_by("pk").first()
    assert real is not None
    assert list(Permission.objects.filter(pk__in=[10**30, -(10**30)])) == []
    assert list(Permission.objects.filter(pk__in=[10**30, real.pk])) == [real]


def test_the_console_refuses_a_price_tier_of_other_digits(world):
    operator = signed_in(world, OPERATOR)
    response = operator.post(
        "/admin/catalog/pricebook/set/",
        {"retail_unit_price_cents": "1000", "tiers": "1 1000\n\u00b2 900"},
    )
    assert response.status_code == 200
    assert "line 2: two whole numbers, please" in response.content.decode()


@pytest.mark.parametrize(
    ("text", "low", "high", "expected"),
    [
        ("42", 1, ids.BIGINT_MAX, 42),
        (" 42\n", 1, ids.BIGINT_MAX, 42),
        ("007", 1, ids.BIGINT_MAX, 7),
        ("-5", -10, 10, -5),
        ("-5", 1, 10, None),
        ("\u00b2", 0, 10, None),
        ("\u0663", 0, 10, None),
        ("\uff11", 0, 10, None),
        ("\u2460", 0, 10, None),
        ("1_000", 0, 10_000, None),
        ("1e3", 0, 10_000, None),
        ("+5", 0, 10, None),
        ("5.0", 0, 10, None),
        ("", 0, 10, None),
        ("-", -10, 10, None),
        ("5\x00", 0, 10, None),
        (str(2**63 - 1), 1, 2**70, 2**63 - 1),  # never past a 64-bit column, whatever asked
        (str(2**63), 1, 2**70, None),
        (str(-(2**63)), -(2**70), 0, -(2**63)),
        ("9" * 30, 1, 2**200, None),
        ("0" * 10_000 + "7", 1, 10, 7),
        ("1" * 10_000, 1, ids.BIGINT_MAX, None),
        (None, 0, 10, None),
        (5, 0, 10, None),
    ],
)
def test_whole_number_accepts_ascii_digits_within_a_64_bit_range_only(text, low, high, expected):
    assert ids.whole_number(text, low=low, high=high) == expected


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
def test_whole_number_never_raises_and_agrees_with_int_on_ascii_digits(text):
    number = ids.whole_number(text, low=ids.BIGINT_MIN, high=ids.BIGINT_MAX)
    if re.fullmatch(r"[ \t\r\n]*-?[0-9]{1,18}[ \t\r\n]*", text):
        assert number == int(text)
    elif number is not None:  # only ASCII digits (at most 19 that matter), nothing else
        assert re.fullmatch(r"[ \t\r\n]*-?0*[0-9]{1,19}[ \t\r\n]*", text)
        assert number == int(text)
