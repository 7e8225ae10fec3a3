"""Countries, regions and tax ids as the tax feature accepts them.

Tax rules hang off these three values (where the buyer is, whether reverse charge applies,
what an invoice must print), so each is checked once here, at the edge, and stored in one
canonical form: later code can then compare them with ``==`` and never re-parse them.

The data comes from ``pycountry`` (ISO 3166-1 and 3166-2) and ``python-stdnum`` (check digits
and formats of tax numbers) rather than from tables of our own, which would go stale. What we
add is what those libraries cannot know: which number our customers are asked for in each
country, how to explain its format to them, and the EU prefix rules.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import TYPE_CHECKING, NamedTuple

import pycountry
from stdnum.au import abn as au_abn
from stdnum.ca import bn as ca_bn
from stdnum.ch import vat as ch_vat
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.gb import vat as gb_vat
from stdnum.in_ import gstin as in_gstin
from stdnum.no import mva as no_mva
from stdnum.us import ein as us_ein
from stdnum.util import clean, get_cc_module

from learncredits.domain.errors import ValidationFailed

if TYPE_CHECKING:
    from stdnum.util import NumberValidationModule

__all__ = [
    "EU_MEMBER_STATES",
    "describe_tax_id",
    "is_eu",
    "normalize_country",
    "normalize_region",
    "normalize_tax_id",
]

EU_MEMBER_STATES: frozenset[str] = frozenset(cc.upper() for cc in eu_vat.MEMBER_STATES) - {"XI"}
"""ISO alpha-2 codes of the 27 member states (GR for Greece, never the VAT prefix EL).

Taken from python-stdnum's VIES list, which also holds XI (Northern Ireland, a VAT prefix
but no member state); the tests pin the exact 27 so that a library upgrade cannot quietly
change who gets EU treatment.
"""

MAX_TAX_ID_LENGTH = 40
"""Longer than any real tax number with its separators; anything longer is pasted junk."""

# Only ASCII letters are upper-cased: str.upper() turns "ß" into "SS" and "ﬀ" into "FF",
# which would let non-ASCII input turn into a valid-looking code.
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

_COUNTRY_RE = re.compile(r"[A-Za-z]{2}")
_REGION_RE = re.compile(r"(?:([A-Za-z]{2})-)?([A-Za-z0-9]{1,3})")
_FREEFORM_TAX_ID_RE = re.compile(r"[A-Za-z0-9 \-./]{2,40}")
_SHOWN_MAX = 40


class _Hint(NamedTuple):
    """How a country's tax id is explained to the person typing it."""

    name: str
    expected: str
    example: str  # in the canonical form normalize_tax_id returns; the tests validate each


# EU entries give the whole VAT number as VIES knows it (prefix first); the prefix may be
# left out on input. Formats follow the checks python-stdnum makes for each country.
_HINTS: dict[str, _Hint] = {
    "AT": _Hint("Austrian VAT number (UID)", "ATU followed by 8 digits", "ATU13585627"),
    "BE": _Hint(
        "Belgian VAT number (enterprise number)",
        "BE followed by 10 digits starting with 0 or 1",
        "BE0428759497",
    ),
    "BG": _Hint("Bulgarian VAT number", "BG followed by 9 or 10 digits", "BG175074752"),
    "CY": _Hint("Cypriot VAT number", "CY followed by 8 digits and a letter", "CY10259033P"),
    "CZ": _Hint("Czech VAT number (DIČ)", "CZ followed by 8, 9 or 10 digits", "CZ25123891"),
    "DE": _Hint("German VAT number (USt-IdNr.)", "DE followed by 9 digits", "DE136695976"),
    "DK": _Hint("Danish VAT number (CVR)", "DK followed by 8 digits", "DK13585628"),
    "EE": _Hint("Estonian VAT number (KMKR)", "EE followed by 9 digits", "EE100594102"),
    "ES": _Hint(
        "Spanish VAT number (NIF)",
        "ES followed by 9 characters: a letter or digit, 7 digits, a letter or digit",
        "ESB64717838",
    ),
    "FI": _Hint("Finnish VAT number (ALV nro)", "FI followed by 8 digits", "FI20774740"),
    "FR": _Hint(
        "French VAT number (n° TVA)",
        "FR followed by a 2-character key and the 9-digit SIREN",
        "FR23334175221",
    ),
    "GR": _Hint("Greek VAT number (ΑΦΜ)", "EL followed by 9 digits", "EL094259216"),
    "HR": _Hint("Croatian VAT number (OIB)", "HR followed by 11 digits", "HR33392005961"),
    "HU": _Hint("Hungarian VAT number", "HU followed by 8 digits", "HU12892312"),
    "IE": _Hint("Irish VAT number", "IE followed by 7 digits and 1 or 2 letters", "IE6433435OA"),
    "IT": _Hint("Italian VAT number (partita IVA)", "IT followed by 11 digits", "IT00743110157"),
    "LT": _Hint("Lithuanian VAT number (PVM)", "LT followed by 9 or 12 digits", "LT119511515"),
    "LU": _Hint("Luxembourg VAT number (TVA)", "LU followed by 8 digits", "LU15027442"),
    "LV": _Hint("Latvian VAT number (PVN)", "LV followed by 11 digits", "LV40003521600"),
    "MT": _Hint("Maltese VAT number", "MT followed by 8 digits", "MT11679112"),
    "NL": _Hint(
        "Dutch VAT number (btw-id)", "NL followed by 9 digits, B and 2 digits", "NL004495445B01"
    ),
    "PL": _Hint("Polish VAT number (NIP)", "PL followed by 10 digits", "PL8567346215"),
    "PT": _Hint("Portuguese VAT number (NIF)", "PT followed by 9 digits", "PT501964843"),
    "RO": _Hint("Romanian VAT number (CIF)", "RO followed by 2 to 10 digits", "RO18547290"),
    "SE": _Hint(
        "Swedish VAT number (momsregistreringsnummer)",
        "SE followed by 12 digits ending in 01",
        "SE123456789701",
    ),
    "SI": _Hint("Slovenian VAT number (ID za DDV)", "SI followed by 8 digits", "SI50223054"),
    "SK": _Hint("Slovak VAT number (IČ DPH)", "SK followed by 10 digits", "SK2022749619"),
    "AU": _Hint("Australian Business Number (ABN)", "11 digits", "83914571673"),
    "CA": _Hint(
        "Canadian Business Number (BN)",
        "9 digits, or the 15-character program account (9 digits, 2 letters, 4 digits)",
        "123026635RC0001",
    ),
    "CH": _Hint(
        "Swiss VAT number (MWST/TVA/IVA)",
        "CHE followed by 9 digits and MWST, TVA or IVA",
        "CHE107787577MWST",
    ),
    "GB": _Hint(
        "UK VAT registration number",
        "GB followed by 9 digits (12 for a branch)",
        "GB980780684",
    ),
    "IN": _Hint(
        "Indian GST identification number (GSTIN)",
        "15 characters: 2-digit state code, 10-character PAN, entity code, Z, check character",
        "27AAPFU0939F1ZV",
    ),
    "NO": _Hint(
        "Norwegian VAT number (MVA)",
        "the 9-digit organisation number followed by MVA",
        "995525828MVA",
    ),
    "US": _Hint(
        "US Employer Identification Number (EIN)",
        "9 digits, often written 12-3456789",
        "911144442",
    ),
}

# Countries whose number is not simply stdnum's "vat" module for the country (or where it
# is, but naming it here documents which number we ask for).
_TAX_ID_MODULES: dict[str, NumberValidationModule] = {
    "AU": au_abn,
    "CA": ca_bn,
    "CH": ch_vat,
    "GB": gb_vat,
    "IN": in_gstin,
    "NO": no_mva,
    "US": us_ein,
}

# stdnum refuses with ValidationError (a ValueError), but some of its checkers trip over input
# they did not expect instead (stdnum.gh.tin calls int() on a letter): for a user that is
# an invalid number too, not a server error.
_STDNUM_REFUSALS = (ValidationError, ValueError, LookupError)

_FREEFORM_DESCRIPTION = (
    "tax number as issued: 2 to 40 characters of letters A-Z, digits, spaces, '-', '.' or '/'"
)


def is_eu(country: str) -> bool:
    """Whether EU VAT rules (VIES numbers, reverse charge) apply to ``country``.

    Takes a normalized code; anything else (lower case, "EL") is simply not a member state,
    so a caller that forgot to normalize gets non-EU treatment rather than an exception.
    """
    return country in EU_MEMBER_STATES


def normalize_country(code: object, *, field: str = "country") -> str:
    """An ISO 3166-1 alpha-2 code, upper case, known to pycountry.

    Only alpha-2 is accepted, not alpha-3 or names, so that one country has exactly one
    stored spelling. ``field`` lets callers name where the value came from (e.g.
    "seller.country") so the API error points at the right input.
    """
    expected = f"{field} must be an ISO 3166-1 alpha-2 code such as DE or US"
    if not isinstance(code, str):
        raise ValidationFailed(f"{expected} (got {_shown_type(code)})", field=field)
    text = code.strip()
    # The ASCII check comes first: full-width letters, or "ß" (which str.upper() turns into
    # "SS", South Sudan), must not become a country by accident.
    if _COUNTRY_RE.fullmatch(text) is None:
        raise ValidationFailed(f"{expected} (got {_shown(text)})", field=field)
    upper = text.translate(_ASCII_UPPER)
    if pycountry.countries.get(alpha_2=upper) is None:
        raise ValidationFailed(f"{expected} (got {_shown(text)})", field=field)
    return upper


def normalize_region(country: str, region: object, *, field: str = "region") -> str | None:
    """The ISO 3166-2 subdivision part (the text after the dash), or None when absent.

    People type "NY", "ny" or "US-NY"; storing only the part after the dash keeps one
    spelling, and the country is stored beside it anyway. A prefix naming another country is
    refused rather than dropped, since "CA-ON" for a US address means the country is wrong.
    An invalid ``country`` is reported under the field "country".
    """
    cc = normalize_country(country)
    if region is None:
        return None
    parts = _subdivision_parts(cc)
    if parts:
        expected = f"ISO 3166-2 code such as {cc}-{parts[0]} or {parts[0]}"
    else:
        expected = f"{cc} has no ISO 3166-2 subdivisions, so leave {field} empty"
    if not isinstance(region, str):
        raise ValidationFailed(
            f"{field} must be a subdivision of {cc} ({expected}; got {_shown_type(region)})",
            field=field,
        )
    text = region.strip()
    if not text:
        return None
    match = _REGION_RE.fullmatch(text)
    if match is not None:
        prefix = (match.group(1) or "").translate(_ASCII_UPPER)
        part = match.group(2).translate(_ASCII_UPPER)
        if prefix and prefix != cc and pycountry.countries.get(alpha_2=prefix) is not None:
            raise ValidationFailed(
                f"{field} {_shown(text)} has the country prefix {prefix}, but the country is "
                f"{cc} ({expected})",
                field=field,
            )
        if prefix in ("", cc) and part in parts:
            return part
    raise ValidationFailed(
        f"{field} {_shown(text)} is not a subdivision of {cc} ({expected})", field=field
    )


def normalize_tax_id(country: str, tax_id: object, *, field: str = "tax_id") -> str:
    """The tax id in python-stdnum's compact form after checking it for ``country``.

    Which number is asked for: in EU member states the VAT number (returned with its VIES
    prefix, EL for Greece, so it can be printed on invoices and checked in VIES as is);
    GB its VAT number with the GB prefix; AU the ABN; CA the BN (9 digits or the 15-character
    program account); IN the GSTIN; US the EIN; CH the VAT number (CHE...MWST); NO the MVA
    number; elsewhere stdnum's "vat" or else "tin" module for the country. Where stdnum has
    neither, the value is only checked to look like an identifier (2 to 40 characters of
    A-Z, 0-9 and " -./", stored upper-cased without spaces): nothing further is verified.

    The id itself is never echoed in error messages, as tax ids of individuals are personal
    data and error messages end up in logs.
    """
    cc = normalize_country(country)
    if not isinstance(tax_id, str):
        raise ValidationFailed(
            f"{field} must be a string holding the {describe_tax_id(cc)} "
            f"(got {_shown_type(tax_id)})",
            field=field,
        )
    text = tax_id.strip()
    if not text:
        raise ValidationFailed(
            f"{field} must not be empty (expected the {describe_tax_id(cc)})", field=field
        )
    if len(text) > MAX_TAX_ID_LENGTH:
        raise ValidationFailed(
            f"{field} must be at most {MAX_TAX_ID_LENGTH} characters (got {len(text)})",
            field=field,
        )
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise ValidationFailed(
            f"{field} must not contain control or invisible characters", field=field
        )
    text = text.translate(_ASCII_UPPER)
    if cc in EU_MEMBER_STATES:
        return _eu_vat_number(cc, text, field)
    module = _tax_id_module(cc)
    if module is None:
        return _freeform_tax_id(cc, text, field)
    try:
        compact = module.validate(text)
    except _STDNUM_REFUSALS:
        raise ValidationFailed(_invalid_message(cc, field), field=field) from None
    if cc == "GB":
        compact = "GB" + compact
    if not _is_plain_ascii(compact):  # a module that let Unicode digits through
        raise ValidationFailed(_invalid_message(cc, field), field=field)
    return compact


def describe_tax_id(country: str) -> str:
    """The tax id asked for in ``country``, in words, with its format where we know it.

    Forms show this as help text and error messages reuse it, so the two never disagree.
    """
    cc = normalize_country(country)
    hint = _HINTS.get(cc)
    if hint is not None:
        return f"{hint.name}: {hint.expected}, e.g. {hint.example}"
    if cc in EU_MEMBER_STATES:  # only if stdnum ever adds a member state
        return f"VAT number: {_vat_prefix(cc)} followed by the national VAT number"
    module = _tax_id_module(cc)
    if module is None:
        return _FREEFORM_DESCRIPTION
    return _module_name(module)


def _eu_vat_number(cc: str, text: str, field: str) -> str:
    """Validate an EU VAT number typed with or without its prefix; return it prefixed.

    Some national numbers start with letters (a French key can be two letters), so the text
    is first tried as a national number even when it begins like another state's prefix;
    only if that fails is the foreign prefix blamed.
    """
    prefix = _vat_prefix(cc)
    compacted = clean(text, " -./,:")
    head = compacted[:2]
    own_prefixes = {prefix, cc}  # {"EL", "GR"} for Greece, people type both
    candidates = [prefix + compacted]
    if head in own_prefixes:
        candidates.insert(0, prefix + compacted[2:])
    for candidate in candidates:
        try:
            number = eu_vat.validate(candidate)
        except _STDNUM_REFUSALS:
            continue
        if number.startswith(prefix) and _is_plain_ascii(number):
            return number
    foreign = {_vat_prefix(other) for other in EU_MEMBER_STATES} | {"GR", "XI"}
    if head in foreign - own_prefixes:
        other = "GR" if head == "EL" else head
        raise ValidationFailed(
            f"{field}: a VAT number of {other} cannot be the tax id of an org in {cc} "
            f"(expected the {describe_tax_id(cc)})",
            field=field,
        )
    raise ValidationFailed(_invalid_message(cc, field), field=field)


def _freeform_tax_id(cc: str, text: str, field: str) -> str:
    """Accept anything shaped like an identifier where stdnum cannot check the number."""
    compact = text.replace(" ", "")
    if (
        _FREEFORM_TAX_ID_RE.fullmatch(text) is None
        or len(compact) < 2
        or not any(ch.isalnum() for ch in compact)
    ):
        raise ValidationFailed(
            f"{field} must be 2 to 40 characters of letters A-Z, digits, spaces, '-', '.' or "
            f"'/', with at least one letter or digit, for {cc}",
            field=field,
        )
    return compact


def _invalid_message(cc: str, field: str) -> str:
    """Name the number and, where we know it, its format: "invalid" alone helps nobody."""
    hint = _HINTS.get(cc)
    if hint is not None:
        return (
            f"{field} is not a valid {hint.name} for {cc}: expected {hint.expected}, "
            f"e.g. {hint.example}"
        )
    return f"{field} is not a valid {describe_tax_id(cc)} for {cc}"


def _vat_prefix(cc: str) -> str:
    """Greece is GR in ISO 3166-1 but EL in VAT numbers."""
    return "EL" if cc == "GR" else cc


@functools.cache
def _tax_id_module(cc: str) -> NumberValidationModule | None:
    """The stdnum module for the country's business tax number, if stdnum has one."""
    if cc in _TAX_ID_MODULES:
        return _TAX_ID_MODULES[cc]
    return get_cc_module(cc, "vat") or get_cc_module(cc, "tin")


def _module_name(module: NumberValidationModule) -> str:
    """The number's name as stdnum's docstring states it on its first line.

    Docstrings are gone under ``python -OO``, hence the plain fallback.
    """
    doc = (getattr(module, "__doc__", None) or "").strip()
    first = doc.splitlines()[0].strip() if doc else ""
    return first.removesuffix(".") or "tax number"


@functools.cache
def _subdivision_parts(cc: str) -> tuple[str, ...]:
    """The code parts after "CC-" of the country's ISO 3166-2 subdivisions, sorted."""
    # (pycountry types its lookups loosely: this one is untyped)
    subdivisions = pycountry.subdivisions.get(country_code=cc) or []  # type: ignore[no-untyped-call]
    return tuple(sorted(sub.code.split("-", 1)[1] for sub in subdivisions))


def _is_plain_ascii(text: str) -> bool:
    """Stored ids must compare equal byte for byte, whatever a stdnum module let through."""
    return text.isascii() and text.isprintable()


def _shown(text: str) -> str:
    """The rejected input, quoted, cut short so a huge value cannot flood the message."""
    if len(text) > _SHOWN_MAX:
        text = text[:_SHOWN_MAX] + "..."
    return repr(text)


def _shown_type(value: object) -> str:
    """JSON null arrives as None; other wrong types are named, never echoed."""
    return "nothing" if value is None else f"a value of type {type(value).__name__}"
