"""``__in`` on integer columns with values no column can hold: no match, not a driver error.

Django already treats ``pk=10**30`` as matching nothing (its integer lookups drop out-of-range
values before the database sees them), but not ``pk__in=[10**30]``: SQLite's driver raises
OverflowError and the request became a 500. That is what Django's own multiple-choice form
fields send for a typed-in id (the operator console's permission and group pickers), so the
rule is made whole here, once, for every integer column, instead of in each form.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import IntegerField
from django.db.models.lookups import In
from django.db.models.sql.compiler import SQLCompiler


@IntegerField.register_lookup
class IntegerFieldIn(In):
    """``In`` without the values that lie outside the column's range (they match nothing;
    with none left, the lookup matches nothing, as an empty ``__in`` does)."""

    def process_rhs(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> Any:
        if self.rhs_is_direct_value():
            internal_type = self.lhs.output_field.get_internal_type()
            low, high = connection.ops.integer_field_range(internal_type)
            self.rhs = [
                value
                for value in self.rhs
                if not isinstance(value, int)
                or ((low is None or value >= low) and (high is None or value <= high))
            ]
        return super().process_rhs(compiler, connection)
