"""Webhook URLs: malformed ones are refused with 422 (never a 500), and none reaches a
non-public address, however the address is spelled.

Every URL here has a literal IP host or is refused before any lookup, so nothing needs DNS
(the tests run without a network). Where a test must know which address a URL really leads
to, it asks urllib and the C resolver themselves (``connected_addresses``), not the code under
test.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from learncredits.notify import delivery as delivery_module
from learncredits.notify.delivery import (
    UnsafeUrl,
    check_url,
    deliver_due_webhooks,
    dispatch_events,
    is_public_address,
    parse_webhook_url,
)
from learncredits.notify.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import OrgHandle, Response, ok

pytestmark = pytest.mark.django_db

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROPERTY = hypothesis.settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def post_webhook(org: OrgHandle, url: Any) -> Response:
    return org.api.post(org.path("/webhooks"), {"url": url, "events": []})


def assert_refused(response: Response, *words: str) -> None:
    assert (response.status, response.code) == (422, "validation_error"), response.body
    detail = response.body["detail"]
    for word in words:
        assert word in detail, detail


def connected_addresses(url: str) -> list[IPAddress] | None:
    """The addresses a delivery to ``url`` would connect to, read the way the delivery reads it
    (urllib.request, then http.client, then getaddrinfo) when the host is an IP address in any
    spelling the resolver takes without DNS; None when a lookup would be needed, or when urllib
    could not connect at all."""
    try:
        host = urllib.request.Request(url).host
        connection = http.client.HTTPConnection(host)
        infos = socket.getaddrinfo(
            connection.host, connection.port, proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST
        )
    except (ValueError, OSError, http.client.HTTPException):
        return None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


# --- the reproduced defects, through the HTTP API -------------------------------------------------

MALFORMED = [
    ("http://1.1.1.1:99999/", "port"),
    ("http://1.1.1.1:65536/", "port"),
    ("http://1.1.1.1:abc/", "port"),
    ("http://1.1.1.1:-1/", "port"),
    ("http://1.1.1.1:0/", "port"),
    ("http://1.1.1.1:٨٠/", "port"),  # Arabic-Indic digits: int() would read 80
    ("http://[::1", "IPv6"),
    ("http://[zz]/", "IPv6"),
    ("http://[fe80::1%25eth0]/", "IPv6"),
    ("http://a..b/", "host"),
    ("http://" + "a" * 64 + ".example/", "63"),
    ("http://" + ".".join(["a" * 63] * 4) + "/", "253"),
    ("http://user:secret@hooks.example/", "credentials"),
    ("http://hooks.example/" + "a" * 2000, "2000"),
    ("http://hooks.example/\x00", "NUL"),
    ("http://hooks.example/\x01", "control"),
    ("http://hoo ks.example/", "control"),
    ("http://hooks.example/cafés", "ASCII"),
    ("http://hooks_in.example/", "host"),
    ("http://%31%32%37.0.0.1/", "host"),  # urllib unquotes the host: this would be 127.0.0.1
    ("http://2001:db8::1/", "brackets"),
    # Numeric spellings of a public IPv4 (93.184.215.14): refused for what they are, not for
    # where they lead, so the URL stored is the address connected to, in one spelling.
    ("http://1572395790/", "IPv4"),
    ("http://0x5d.0xb8.0xd7.0xe/", "IPv4"),
    ("http://093.184.215.14/", "IPv4"),
    ("http://93.184.55054/", "IPv4"),
    ("http://\ufffe.example/", "control"),
]


@pytest.mark.parametrize(("url", "named"), MALFORMED, ids=[u[:40] for u, _ in MALFORMED])
def test_a_malformed_url_is_refused_with_422_even_where_private_addresses_are_allowed(
    org: OrgHandle, url: str, named: str
) -> None:
    """The conftest allows private addresses (as in development): the syntax check still holds."""
    assert_refused(post_webhook(org, url), named)
    assert WebhookEndpoint.objects.count() == 0


EMBEDDED_PRIVATE = [
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::10.0.0.1]/",
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::ffff:7f00:1]/",  # IPv4-mapped, in hex
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # Teredo, client 10.0.0.1
    "http://[2001:0:a00:1::1]/",  # Teredo, server 10.0.0.1
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "http://[::]/",
]
NUMERIC_SPELLINGS = [
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://\uff11\uff12\uff17.0.0.1/",  # full-width 127: the IDNA codec maps it to ASCII
    "http://127。0。0。1/",  # ideographic full stops: IDNA label separators
    "http://169.254.169.254:80/latest/meta-data/",
]


# Not read as an address by every resolver (glibc looks it up by name), but by some.
TRAILING_DOT = ["http://127.0.0.1./", "http://10.0.0.1./in"]


@pytest.mark.parametrize("url", EMBEDDED_PRIVATE + NUMERIC_SPELLINGS + TRAILING_DOT)
def test_a_private_address_in_any_spelling_is_refused_in_production(
    org: OrgHandle, settings: Any, url: str
) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    assert_refused(post_webhook(org, url))
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("url", EMBEDDED_PRIVATE + NUMERIC_SPELLINGS)
def test_the_private_spellings_really_lead_to_an_ip_address_without_dns(url: str) -> None:
    """Guards the cases above: each is a way urllib connects to an IP address with no lookup,
    a private IPv4 one where the spelling is IPv4."""
    addresses = connected_addresses(url)
    assert addresses, url
    assert not any(a.is_global for a in addresses if a.version == 4), (url, addresses)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.215.14/hooks",
        "https://93.184.215.14:8443/hooks?x=1#frag",
        "http://[2606:4700:4700::1111]/in",
        "http://[64:ff9b::5db8:d70e]/in",  # NAT64 of 93.184.215.14
        "http://[2002:5db8:d70e::1]/in",  # 6to4 of 93.184.215.14
        "http://[::ffff:93.184.215.14]/in",
    ],
)
def test_a_public_address_is_accepted_in_production(
    org: OrgHandle, settings: Any, url: str
) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    assert ok(post_webhook(org, url), 201)["url"] == url


@pytest.mark.parametrize(
    "url", ["http://hooks.example:8080/in", "https://bücher.example/in", "https://HOOKS.example./"]
)
def test_well_formed_names_pass_the_syntax_check(org: OrgHandle, url: str) -> None:
    ok(post_webhook(org, url), 201)


def test_the_detail_names_the_problem(org: OrgHandle) -> None:
    response = post_webhook(org, "http://1.1.1.1:99999/")
    assert_refused(response, "the port must be a number from 1 to 65535")
    response = post_webhook(org, "http://a..b/")
    assert_refused(response, "the host is not a valid name")


# --- the address judgement, without DNS -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("10.1.2.3", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("2606:4700:4700::1111", True),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff0e::1", False),
        ("::ffff:93.184.215.14", True),
        ("::ffff:127.0.0.1", False),
        ("::93.184.215.14", True),
        ("::127.0.0.1", False),
        ("::", False),
        ("64:ff9b::5db8:d70e", True),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::5db8:d70e", False),
        ("2002:5db8:d70e::1", True),
        ("2002:a9fe:a9fe::1", False),
        ("2002:0a00:0001:ffff::1", False),
        # server 65.54.227.120, client 93.184.215.14
        ("2001:0:4136:e378:8000:63bf:a247:28f1", True),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # client 10.0.0.1
        ("2001:0:a00:1:8000:63bf:a247:28f1", False),  # server 10.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


# --- a bad URL already stored cannot stop the delivery loop ---------------------------------------


def test_a_bad_stored_url_fails_its_delivery_and_the_loop_goes_on(org: OrgHandle) -> None:
    """URLs stored before the stricter check (or written by hand) meet it again at delivery."""
    bad = ok(post_webhook(org, "http://hooks-bad.example/in"), 201)
    good = ok(post_webhook(org, "http://hooks-good.example/in"), 201)
    WebhookEndpoint.objects.filter(url=bad["url"]).update(url="http://1.1.1.1:99999/")
    org.buy(1)
    dispatch_events()
    posted: list[str] = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        posted.append(url)
        return 200

    deliver_due_webhooks(post=post)
    assert posted and set(posted) == {good["url"]}
    refused = WebhookDelivery.objects.filter(endpoint__url="http://1.1.1.1:99999/")
    assert refused.exists()
    assert all(d.last_error.startswith("UnsafeUrl: the port") for d in refused)


def test_a_garbled_answer_fails_its_delivery_and_the_loop_goes_on(org: OrgHandle) -> None:
    ok(post_webhook(org, "http://hooks-a.example/in"), 201)
    ok(post_webhook(org, "http://hooks-b.example/in"), 201)
    org.buy(1)
    dispatch_events()
    posted: list[str] = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        posted.append(url)
        raise http.client.BadStatusLine("garbage")

    deliver_due_webhooks(post=post)
    assert set(posted) == {"http://hooks-a.example/in", "http://hooks-b.example/in"}
    assert all(d.last_error.startswith("BadStatusLine") for d in WebhookDelivery.objects.all()), (
        list(WebhookDelivery.objects.values_list("last_error", flat=True))
    )


# --- generators -----------------------------------------------------------------------------------

PRIVATE_IPV4_NETWORKS = [
    ipaddress.IPv4Network(n)
    for n in (
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
    )
]


@st.composite
def private_ipv4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(PRIVATE_IPV4_NETWORKS))
    return network[draw(st.integers(0, network.num_addresses - 1))]


def _hex_pair(value: int) -> str:
    return f"{value >> 16 & 0xFFFF:x}:{value & 0xFFFF:x}"


FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + digit) for digit in range(10)))


@st.composite
def private_host(draw: st.DrawFn) -> str:
    """A private IPv4 address written in one of the ways a resolver or a tunnel reads it."""
    v4 = draw(private_ipv4())
    n = int(v4)
    a, b, c, d = v4.packed
    noise = draw(st.integers(0, 0xFFFF))
    public_server = int(ipaddress.IPv4Address("65.54.227.120"))
    forms = [
        str(v4),
        f"{v4}.",
        str(n),
        hex(n),
        ".".join(hex(x) for x in v4.packed),
        ".".join(f"0{x:o}" for x in v4.packed),
        f"{a}.{n & 0xFFFFFF}",
        f"{a}.{b}.{n & 0xFFFF}",
        f"0x{a:x}.{b}.0{c:o}.{d}",
        str(v4).translate(FULL_WIDTH),
        str(v4).replace(".", "。"),
        f"[::ffff:{v4}]",
        f"[::ffff:{_hex_pair(n)}]",
        f"[0:0:0:0:0:ffff:{_hex_pair(n)}]",
        f"[::{v4}]",
        f"[::{_hex_pair(n)}]",
        f"[64:ff9b::{v4}]",
        f"[64:ff9b::{_hex_pair(n)}]",
        f"[64:ff9b:1:{noise:x}::{v4}]",
        f"[2002:{_hex_pair(n)}::{noise:x}]",
        f"[2002:{_hex_pair(n)}:{noise:x}::1]",
        f"[2001:0:{_hex_pair(public_server)}:8000:{noise:x}:{_hex_pair(~n & 0xFFFFFFFF)}]",
        f"[2001:0:{_hex_pair(n)}::{noise:x}]",
    ]
    return draw(st.sampled_from(forms))


@st.composite
def private_url(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "hTTpS"]))
    port = draw(st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")))
    path = draw(st.sampled_from(["", "/", "/hooks", "/latest/meta-data/", "/?a=1#f"]))
    return f"{scheme}://{draw(private_host())}{port}{path}"


ODD_CHARACTERS = [
    # digits of other scripts (Arabic-Indic, Persian, Devanagari, Bengali, Thai), full-width,
    # superscripts and subscripts
    *"\u0660\u0669\u06f3\u0969\u09e9\u0e53\uff10\uff11\u00b2\u00b9\u2070\u2081",
    *"\x00\ud800\udfff\u200b\u00ad\ufeff \t\n\r",  # NUL, lone surrogates, invisible, spaces
    *"%@:[]\\/#?\u3002\uff0e\uff61-_.",  # and the dots IDNA splits labels on
    *"\u00df\ufb00\u0130\u0301\u0627\u05d0",  # mapped by nameprep, combining, right-to-left
]
LABEL = st.one_of(
    st.text(max_size=12),
    st.text(
        alphabet=st.sampled_from([*"abcxyz0189-", *ODD_CHARACTERS]),
        max_size=12,
    ),
    st.integers(60, 70).map(lambda n: "a" * n),
    st.sampled_from(["localhost", "example", "com", "xn--nxasmq6b", "xn--", "0x7f", "0177", "1"]),
)
NAME_HOST = st.tuples(st.lists(LABEL, min_size=1, max_size=5), st.booleans()).map(
    lambda parts: ".".join(parts[0]) + ("." if parts[1] else "")
)
HOST = st.one_of(
    NAME_HOST,
    st.integers(3, 6).map(lambda n: ".".join(["a" * 63] * n)),
    st.text(max_size=40).map(lambda t: f"[{t}]"),
    st.text(max_size=40).map(lambda t: f"[{t}"),
    st.text(max_size=10).map(lambda t: f"[fe80::1%{t}]"),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.ip_addresses(v=4).map(str),
    private_host(),
)
PORT = st.one_of(
    st.none(),
    st.integers(-(10**6), 10**6).map(str),
    st.integers(65536, 99999).map(str),
    st.integers(10**5, 10**30).map(str),
    st.text(max_size=6),
    st.sampled_from(["", "\u0668\u0660", "\uff18\uff10", "+80", " 80", "8_0", "0x50", "080", "¹"]),
)
SCHEME = st.one_of(
    st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", "file", ""]),
    st.text(max_size=8),
)


# Parts that pass on their own, so that a URL can be all good but for one hostile part.
GOOD_HOST = st.one_of(
    st.sampled_from(
        [
            "hooks.example",
            "HOOKS.Example.",
            "bücher.example",
            "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        ]
    ),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,8}){1,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
GOOD = {
    "scheme": st.sampled_from(["http", "https", "HTTPS"]),
    "separator": st.just("://"),
    "userinfo": st.just(""),
    "host": GOOD_HOST,
    "port": st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    "path": st.sampled_from(["", "/", "/in?x=1", "/a/b#c"]),
}
HOSTILE = {
    "scheme": SCHEME,
    "separator": st.sampled_from(["://", ":/", ":", "//", ":\\\\", ""]),
    "userinfo": st.text(max_size=10).map(lambda t: f"{t}@"),
    "host": HOST,
    "port": PORT.map(lambda p: "" if p is None else f":{p}"),
    "path": st.text(max_size=30),
}


@st.composite
def hostile_url(draw: st.DrawFn) -> str:
    """Random text; or a URL whose parts are each good or hostile, with every mix (all good,
    one hostile part, several) about as likely, so that acceptance is often in reach."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))
    hostile = draw(st.sets(st.sampled_from(sorted(GOOD)), max_size=len(GOOD)))
    return "".join(
        draw((HOSTILE if part in hostile else GOOD)[part])
        for part in ("scheme", "separator", "userinfo", "host", "port", "path")
    )


# --- properties -----------------------------------------------------------------------------------


@PROPERTY
@given(url=hostile_url())
def test_check_url_raises_nothing_but_unsafe_url_and_accepts_only_what_a_delivery_can_use(
    url: str, settings: Any
) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = True
    try:
        check_url(url)
    except UnsafeUrl as refusal:
        assert str(refusal)
        hypothesis.event("refused")
        return
    hypothesis.event("accepted")
    host, port = parse_webhook_url(url)
    assert 1 <= port <= 65535
    # urllib builds a connection from it without error, to the very host that was checked
    connection = http.client.HTTPConnection(urllib.request.Request(url).host)
    assert connection.host.encode("idna").decode("ascii").lower() == host.lower()
    assert host.encode("idna")  # the resolver will take it
    addresses = connected_addresses(url)
    if addresses is not None:
        hypothesis.event("accepted, an IP literal")
        # An IP literal: decidable without DNS, so the production check must agree with the
        # address the delivery would really connect to.
        settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
        try:
            check_url(url)
        except UnsafeUrl:
            assert not all(is_public_address(a) for a in addresses), (url, addresses)
        else:
            assert all(is_public_address(a) for a in addresses), (url, addresses)


@PROPERTY
@given(url=hostile_url())
def test_the_api_answers_a_hostile_url_with_201_or_422_never_a_500(
    url: str, org: OrgHandle, settings: Any
) -> None:
    settings.LEARNCREDITS_RATE_LIMIT = ""
    before = WebhookEndpoint.objects.count()
    response = post_webhook(org, url)
    hypothesis.event(f"HTTP {response.status}")
    assert response.status in (201, 422), (url, response.status, response.body)
    if response.status == 422:
        assert response.code == "validation_error", response.body
        assert WebhookEndpoint.objects.count() == before
    try:
        check_url(url)
    except UnsafeUrl:
        assert response.status == 422, (url, response.body)


@PROPERTY
@given(url=private_url())
def test_a_private_ipv4_is_never_accepted_in_any_spelling(
    url: str, org: OrgHandle, settings: Any
) -> None:
    settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = False
    settings.LEARNCREDITS_RATE_LIMIT = ""
    with pytest.raises(UnsafeUrl):
        check_url(url)
    response = post_webhook(org, url)
    assert (response.status, response.code) == (422, "validation_error"), (url, response.body)
    assert WebhookEndpoint.objects.count() == 0


def test_numeric_spellings_of_one_address_all_lead_to_it() -> None:
    """Guards the generator: were these spellings harmless, refusing them would prove nothing."""
    example = ipaddress.IPv4Address("169.254.169.254")
    for url in ["http://2852039166/", "http://0xa9.0xfe.0xa9.0xfe/", "http://0251.0376.0251.0376/"]:
        assert connected_addresses(url) == [example], url
    assert delivery_module.embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe")) == [example]
