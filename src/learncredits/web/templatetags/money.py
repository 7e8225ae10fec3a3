"""``{{ cents|cents }}``: integer cents shown as money."""

from django import template

from learncredits.domain.money import format_cents

register = template.Library()


@register.filter
def cents(value: int | None) -> str:
    return "" if value is None else format_cents(int(value))
