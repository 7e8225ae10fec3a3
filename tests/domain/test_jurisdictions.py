"""Countries, regions and tax ids as the tax feature accepts them (domain/jurisdictions.py).

Pure rules over pycountry and python-stdnum data: no database, no HTTP. Valid tax ids are the
examples from python-stdnum's own module docstrings.
"""

from __future__ import annotations

import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.ec import ruc as ec_ruc
from stdnum.eu import vat as eu_vat

from learncredits.domain.errors import ValidationFailed
from learncredits.domain.jurisdictions import (
    EU_MEMBER_STATES,
    describe_tax_id,
    is_eu,
    normalize_country,
    normalize_region,
    normalize_tax_id,
)

ALL_COUNTRIES = sorted(country.alpha_2 for country in pycountry.countries)
EU_27 = {
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
}  # fmt: skip
HINTED_NON_EU = ["AU", "CA", "CH", "GB", "IN", "NO", "US"]


def refusal(call, *args, **kwargs) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        call(*args, **kwargs)
    return caught.value


# --- EU membership ---------------------------------------------------------------------


def test_eu_member_states_are_exactly_the_27():
    assert EU_MEMBER_STATES == EU_27
    assert isinstance(EU_MEMBER_STATES, frozenset)


@pytest.mark.parametrize(
    ("country", "expected"),
    [("DE", True), ("GR", True), ("FR", True), ("EL", False), ("XI", False), ("GB", False),
     ("CH", False), ("NO", False), ("US", False), ("de", False), ("", False)],
)  # fmt: skip
def test_is_eu(country, expected):
    assert is_eu(country) is expected


# --- countries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("DE", "DE"), ("de", "DE"), (" us ", "US"), ("Gr", "GR"), ("\tch\n", "CH"), ("gb", "GB")],
)
def test_normalize_country_accepts(raw, expected):
    assert normalize_country(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "XX",  # well-formed but unassigned
        "UK",  # the common mistake for GB
        "EL",  # Greece's VAT prefix, not its ISO code
        "",
        "   ",
        "D",
        "DEU",  # alpha-3
        "Germany",
        "D E",
        "\uff24\uff25",  # full-width "DE"
        "ß",  # str.upper() makes it "SS", South Sudan
        "D1",
        "DE\x00",
    ],
)
def test_normalize_country_refuses(raw):
    error = refusal(normalize_country, raw)
    assert error.extra == {"field": "country"}
    assert error.detail.startswith("country must be an ISO 3166-1 alpha-2 code such as DE or US")


@pytest.mark.parametrize("raw", [None, 49, b"DE", ["DE"], 1.5])
def test_normalize_country_refuses_non_strings(raw):
    error = refusal(normalize_country, raw)
    assert error.extra == {"field": "country"}
    assert "ISO 3166-1 alpha-2" in error.detail


def test_normalize_country_message_shows_the_input():
    error = refusal(normalize_country, "XX")
    assert error.detail == (
        "country must be an ISO 3166-1 alpha-2 code such as DE or US (got 'XX')"
    )


def test_normalize_country_names_the_callers_field():
    error = refusal(normalize_country, "XX", field="seller.country")
    assert error.extra == {"field": "seller.country"}
    assert error.detail.startswith("seller.country must be an ISO 3166-1 alpha-2 code")


def test_normalize_country_cuts_a_long_input_short_in_the_message():
    error = refusal(normalize_country, "x" * 10_000)
    assert len(error.detail) < 200


# --- regions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "raw", "expected"),
    [
        ("US", "ny", "NY"),
        ("US", "NY", "NY"),
        ("US", "US-NY", "NY"),
        ("US", " us-ny ", "NY"),
        ("us", "ca", "CA"),  # California; the country is normalized too
        ("CA", "ON", "ON"),
        ("CA", "CA-ON", "ON"),
        ("GB", "ENG", "ENG"),
        ("DE", "by", "BY"),
        ("FR", "FR-75C", "75C"),
        ("US", None, None),
        ("US", "", None),
        ("US", "   ", None),
        ("AQ", None, None),
    ],
)
def test_normalize_region_accepts(country, raw, expected):
    assert normalize_region(country, raw) == expected


@pytest.mark.parametrize(
    ("country", "raw"),
    [
        ("US", "ZZ"),
        ("US", "ON"),  # Ontario is in CA
        ("US", "New York"),
        ("US", "US-"),
        ("US", "-NY"),
        ("US", "NY-US"),
        ("US", "US-NY-1"),
        ("US", "USNY"),
        ("US", "\uff2e\uff39"),  # full-width "NY"
        ("US", "ZZ-NY"),  # not a country at all
        ("CA", "NY"),
        ("AQ", "X"),  # Antarctica has no subdivisions
    ],
)
def test_normalize_region_refuses(country, raw):
    error = refusal(normalize_region, country, raw)
    assert error.extra == {"field": "region"}
    assert error.detail.startswith(f"region {raw.strip()!r} is not a subdivision of {country}")


def test_normalize_region_message_gives_an_example_of_that_country():
    error = refusal(normalize_region, "US", "ZZ")
    assert error.detail == (
        "region 'ZZ' is not a subdivision of US (ISO 3166-2 code such as US-AK or AK)"
    )


def test_normalize_region_refuses_another_countrys_prefix():
    error = refusal(normalize_region, "US", "CA-ON")
    assert error.extra == {"field": "region"}
    assert error.detail.startswith(
        "region 'CA-ON' has the country prefix CA, but the country is US"
    )


def test_normalize_region_says_when_a_country_has_no_subdivisions():
    error = refusal(normalize_region, "AQ", "X")
    assert "AQ has no ISO 3166-2 subdivisions" in error.detail


@pytest.mark.parametrize("raw", [5, b"NY", ["NY"]])
def test_normalize_region_refuses_non_strings(raw):
    error = refusal(normalize_region, "US", raw)
    assert error.extra == {"field": "region"}
    assert error.detail.startswith("region must be a subdivision of US")


def test_normalize_region_names_the_callers_field():
    error = refusal(normalize_region, "US", "ZZ", field="billing.region")
    assert error.extra == {"field": "billing.region"}
    assert error.detail.startswith("billing.region 'ZZ' is not a subdivision of US")


def test_normalize_region_refuses_an_invalid_country_as_the_country():
    error = refusal(normalize_region, "XX", "NY")
    assert error.extra == {"field": "country"}


# --- tax ids: valid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "raw", "expected"),
    [
        # EU: with or without the prefix, any spacing and case; returned with the prefix
        ("DE", "DE136695976", "DE136695976"),
        ("DE", "136695976", "DE136695976"),
        ("DE", "de 136 695 976", "DE136695976"),
        ("DE", "DE 136,695 976", "DE136695976"),
        ("GR", "EL 094259216 ", "EL094259216"),
        ("GR", "094259216", "EL094259216"),
        ("GR", "GR094259216", "EL094259216"),  # the ISO code typed as prefix
        ("AT", "AT U13585627", "ATU13585627"),
        ("AT", "U13585627", "ATU13585627"),
        ("BE", "BE697449992", "BE0697449992"),
        ("BE", "BE 428759497", "BE0428759497"),
        ("BG", "175074752", "BG175074752"),
        ("CY", "CY-10259033P ", "CY10259033P"),
        ("CZ", "25123891", "CZ25123891"),
        ("CZ", "7103192745", "CZ7103192745"),
        ("DK", "DK 13585628", "DK13585628"),
        ("EE", "100594102", "EE100594102"),
        ("ES", "B64717838", "ESB64717838"),
        ("FI", "FI 20774740", "FI20774740"),
        ("FR", "FR 61 954 506 077", "FR61954506077"),
        ("FR", "23334175221", "FR23334175221"),
        ("HR", "HR 33392005961", "HR33392005961"),
        ("HU", "HU-12892312", "HU12892312"),
        ("IE", "IE 6433435OA", "IE6433435OA"),
        ("IE", "8D79739I", "IE8D79739I"),
        ("IT", "IT 00743110157", "IT00743110157"),
        ("LT", "LT 100001919017", "LT100001919017"),
        ("LU", "LU 150 274 42", "LU15027442"),
        ("LV", "LV 4000 3521 600", "LV40003521600"),
        ("MT", "MT 1167-9112", "MT11679112"),
        ("NL", "NL4495445B01", "NL004495445B01"),
        ("PL", "PL 8567346215", "PL8567346215"),
        ("PT", "PT 501 964 843", "PT501964843"),
        ("RO", "RO 185 472 90", "RO18547290"),
        ("RO", "185 472 90", "RO18547290"),
        ("SE", "SE 123456789701", "SE123456789701"),
        ("SI", "SI 5022 3054", "SI50223054"),
        ("SK", "SK 202 274 96 19", "SK2022749619"),
        # the named non-EU numbers
        ("GB", "GB 980 7806 84", "GB980780684"),
        ("GB", "980780684", "GB980780684"),
        ("AU", "83 914 571 673", "83914571673"),
        ("CA", "12302 6635", "123026635"),
        ("CA", "12302 6635 RC 0001", "123026635RC0001"),
        ("CA", "123026635rc0001", "123026635RC0001"),
        ("IN", "27AAPFU0939F1ZV", "27AAPFU0939F1ZV"),
        ("IN", "27aapfu0939f1zv", "27AAPFU0939F1ZV"),
        ("US", "91-1144442", "911144442"),
        ("US", "911144442", "911144442"),
        ("CH", "CHE-107.787.577 IVA", "CHE107787577IVA"),
        ("CH", "che-107.787.577 mwst", "CHE107787577MWST"),
        ("NO", "NO 995 525 828 MVA", "995525828MVA"),
        # stdnum's "vat" module for the country, then its "tin" module
        ("EC", "1792060346-001", "1792060346001"),
        ("BR", "16.727.230/0001-97", "16727230000197"),
        ("ZA", "0001339050", "0001339050"),
        ("GH", "C0000803561", "C0000803561"),
        # no stdnum module: shape only
        ("AE", "100-123 456.7/8", "100-123456.7/8"),
        ("AE", "ab12", "AB12"),
        ("NG", "12345678-0001", "12345678-0001"),
    ],
)
def test_normalize_tax_id_accepts(country, raw, expected):
    assert normalize_tax_id(country, raw) == expected


# --- tax ids: invalid ------------------------------------------------------------------


def test_invalid_tax_id_message_names_the_expected_format():
    error = refusal(normalize_tax_id, "DE", "DE136695977")
    assert error.extra == {"field": "tax_id"}
    assert error.detail == (
        "tax_id is not a valid German VAT number (USt-IdNr.) for DE: "
        "expected DE followed by 9 digits, e.g. DE136695976"
    )


@pytest.mark.parametrize(
    ("country", "raw"),
    [
        ("DE", "136695978"),  # check digit
        ("DE", "DE13669597"),  # too short
        ("DE", "GB980780684"),  # not an EU prefix: just not a German number
        ("GR", "EL 123456781"),
        ("BE", "BE 2"),
        ("FR", "FR 61 954 506 078"),
        ("NL", "NL004495446B01"),
        ("RO", "RO 1"),
        ("ES", "ESB64717839"),
        ("GB", "802311781"),  # check digit
        ("AU", "99 999 999 999"),
        ("CA", "123456783"),
        ("CA", "12345678Z"),
        ("IN", "27AAPFU0939F1Z"),
        ("IN", "27AAPFU0939F1ZO"),
        ("US", "911-14-4442"),  # dash in the wrong place
        ("US", "07-1144442"),  # prefix never issued
        ("CH", "CHE-107.787.578 IVA"),
        ("CH", "CHE-107.787.577"),  # the UID without the VAT suffix
        ("NO", "NO 995 525 829 MVA"),
        ("EC", "123"),
        ("GH", "C00008LY561"),  # stdnum.gh.tin raises a bare ValueError on this one
        ("DE", "DE136695976ß"),
    ],
)
def test_normalize_tax_id_refuses(country, raw):
    error = refusal(normalize_tax_id, country, raw)
    assert error.extra == {"field": "tax_id"}
    assert error.detail.startswith(
        f"tax_id is not a valid {describe_tax_id(country).split(':')[0]}"
    )
    assert f" for {country}" in error.detail


@pytest.mark.parametrize(
    ("country", "raw", "other"),
    [
        ("DE", "FR23334175221", "FR"),
        ("DE", "FR 61 954 506 077", "FR"),
        ("FR", "DE136695976", "DE"),
        ("DE", "EL094259216", "GR"),  # named by its ISO code
        ("DE", "GR094259216", "GR"),
        ("AT", "NL004495445B01", "NL"),
        ("IE", "XI980780684", "XI"),  # Northern Ireland prefix
    ],
)
def test_normalize_tax_id_refuses_another_member_states_vat_number(country, raw, other):
    error = refusal(normalize_tax_id, country, raw)
    assert error.extra == {"field": "tax_id"}
    assert f"a VAT number of {other} cannot be the tax id of an org in {country}" in error.detail
    assert describe_tax_id(country) in error.detail


@pytest.mark.parametrize("raw", [None, 136695976, b"DE136695976", ["DE136695976"]])
def test_normalize_tax_id_refuses_non_strings(raw):
    error = refusal(normalize_tax_id, "DE", raw)
    assert error.extra == {"field": "tax_id"}
    assert error.detail.startswith("tax_id must be a string")


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_normalize_tax_id_refuses_empty(raw):
    error = refusal(normalize_tax_id, "DE", raw)
    assert error.detail.startswith("tax_id must not be empty")
    assert "DE followed by 9 digits" in error.detail


def test_normalize_tax_id_length_limit():
    padded = "DE 136 695 976" + " " * 26  # 40 with the trailing spaces, stripped first
    assert normalize_tax_id("DE", padded) == "DE136695976"
    assert normalize_tax_id("AE", "A" * 40) == "A" * 40
    error = refusal(normalize_tax_id, "AE", "A" * 41)
    assert error.detail == "tax_id must be at most 40 characters (got 41)"


@pytest.mark.parametrize(
    "raw", ["DE136\x00695976", "DE136\x1b695976", "DE136\u200b695976", "DE136\ufeff695976"]
)
def test_normalize_tax_id_refuses_control_and_invisible_characters(raw):
    error = refusal(normalize_tax_id, "DE", raw)
    assert error.detail == "tax_id must not contain control or invisible characters"


@pytest.mark.parametrize("raw", ["A", "A ", "ä1", "AB_12", "AB#12", "---", "- -", "A" * 41])
def test_normalize_tax_id_freeform_refuses(raw):
    error = refusal(normalize_tax_id, "AE", raw)
    assert error.extra == {"field": "tax_id"}
    assert "tax_id must be" in error.detail


def test_normalize_tax_id_names_the_callers_field():
    error = refusal(normalize_tax_id, "DE", "DE136695977", field="buyer.tax_id")
    assert error.extra == {"field": "buyer.tax_id"}
    assert error.detail.startswith("buyer.tax_id is not a valid German VAT number")


def test_normalize_tax_id_does_not_echo_the_number():
    error = refusal(normalize_tax_id, "DE", "DE999999999")
    assert "999999999" not in error.detail


def test_normalize_tax_id_refuses_an_invalid_country_as_the_country():
    error = refusal(normalize_tax_id, "XX", "DE136695976")
    assert error.extra == {"field": "country"}


def test_normalize_tax_id_returns_plain_ascii_for_full_width_digits():
    # stdnum folds full-width digits (East Asian input methods) and Unicode dashes to ASCII
    assert (
        normalize_tax_id("DE", "DE\uff11\uff13\uff16\uff16\uff19\uff15\uff19\uff17\uff16")
        == "DE136695976"
    )
    assert normalize_tax_id("US", "91\u20111144442") == "911144442"  # non-breaking hyphen


def test_normalize_tax_id_needs_no_normalized_country():
    assert normalize_tax_id(" de ", "136695976") == "DE136695976"


# --- hints -----------------------------------------------------------------------------


@pytest.mark.parametrize("country", sorted(EU_27) + HINTED_NON_EU)
def test_hint_example_is_valid_and_canonical(country):
    hint = describe_tax_id(country)
    example = hint.rsplit(", e.g. ", 1)[1]
    assert normalize_tax_id(country, example) == example


@pytest.mark.parametrize("country", sorted(EU_27))
def test_eu_hint_starts_with_the_vat_prefix(country):
    prefix = "EL" if country == "GR" else country
    assert f": {prefix}" in describe_tax_id(country)
    assert describe_tax_id(country).rsplit(", e.g. ", 1)[1].startswith(prefix)


@pytest.mark.parametrize("country", sorted(EU_27) + HINTED_NON_EU)
def test_invalid_message_repeats_the_hint(country):
    name, expected = describe_tax_id(country).split(": ", 1)
    error = refusal(normalize_tax_id, country, "0")
    assert error.detail == f"tax_id is not a valid {name} for {country}: expected {expected}"


def test_hint_without_a_table_entry_comes_from_the_stdnum_docstring():
    name = ec_ruc.__doc__.strip().splitlines()[0].removesuffix(".")
    assert name.startswith("RUC (")
    assert describe_tax_id("EC") == name
    assert refusal(normalize_tax_id, "EC", "1").detail == f"tax_id is not a valid {name} for EC"


def test_hint_where_stdnum_has_no_module_says_anything_shaped_right_is_taken():
    assert describe_tax_id("AE").startswith("tax number as issued: 2 to 40 characters")


def test_describe_tax_id_refuses_an_invalid_country():
    assert refusal(describe_tax_id, "XX").extra == {"field": "country"}


def test_eu_module_agrees_with_stdnum_on_prefixed_numbers():
    """Our EU results are numbers stdnum.eu.vat itself accepts, in its compact form."""
    for country, raw in [("DE", "136695976"), ("GR", "GR 094259216"), ("BE", "428759497")]:
        number = normalize_tax_id(country, raw)
        assert eu_vat.validate(number) == number


# --- properties ------------------------------------------------------------------------

# No deadline: the first example for a country imports its stdnum module and data files.
countries = st.sampled_from(ALL_COUNTRIES)
id_alphabet = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdelru0123456789 -./,:")
texts = st.text() | st.text(alphabet=id_alphabet, max_size=45)


@settings(max_examples=300, deadline=None)
@given(raw=texts)
def test_normalize_country_returns_a_code_or_refuses(raw):
    try:
        code = normalize_country(raw)
    except ValidationFailed:
        return
    assert pycountry.countries.get(alpha_2=code) is not None
    assert normalize_country(code) == code


@settings(max_examples=300, deadline=None)
@given(country=countries, raw=st.none() | texts)
def test_normalize_region_returns_a_subdivision_or_refuses(country, raw):
    try:
        part = normalize_region(country, raw)
    except ValidationFailed:
        return
    if part is not None:
        assert pycountry.subdivisions.get(code=f"{country}-{part}") is not None
        assert normalize_region(country, part) == part


@settings(max_examples=500, deadline=None)
@given(country=countries, raw=texts)
def test_normalize_tax_id_returns_a_value_or_refuses(country, raw):
    try:
        number = normalize_tax_id(country, raw)
    except ValidationFailed:
        return
    assert number
    assert normalize_tax_id(country, number) == number


def respelled(text: str, data: st.DataObject) -> str:
    """The same value as a person might type it: other case, extra spaces around."""
    if data.draw(st.booleans()):
        text = text.lower()
    return (
        data.draw(st.sampled_from(["", " ", "\t"])) + text + data.draw(st.sampled_from(["", " "]))
    )


@settings(deadline=None)
@given(country=countries, data=st.data())
def test_normalize_country_is_idempotent_on_valid_input(country, data):
    code = normalize_country(respelled(country, data))
    assert code == country
    assert normalize_country(code) == code


@settings(deadline=None)
@given(subdivision=st.sampled_from(list(pycountry.subdivisions)), data=st.data())
def test_normalize_region_is_idempotent_on_valid_input(subdivision, data):
    country, part = subdivision.code.split("-", 1)
    raw = subdivision.code if data.draw(st.booleans()) else part
    normalized = normalize_region(country, respelled(raw, data))
    assert normalized == part
    assert normalize_region(country, normalized) == normalized


VALID_TAX_IDS = [
    (country, describe_tax_id(country).rsplit(", e.g. ", 1)[1])
    for country in sorted(EU_27) + HINTED_NON_EU
] + [
    ("DE", "136695976"),
    ("GR", "GR 094259216"),
    ("RO", "185 472 90"),
    ("NL", "NL4495445B01"),
    ("CA", "12302 6635"),
    ("US", "91-1144442"),
    ("NO", "NO 995 525 828 MVA"),
    ("EC", "1792060346-001"),
    ("BR", "16.727.230/0001-97"),
    ("AE", "100-123 456.7/8"),
]


@settings(deadline=None)
@given(case=st.sampled_from(VALID_TAX_IDS), data=st.data())
def test_normalize_tax_id_is_idempotent_on_valid_input(case, data):
    country, raw = case
    number = normalize_tax_id(country, respelled(raw, data))
    assert normalize_tax_id(country, number) == number
