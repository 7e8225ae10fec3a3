"""Pure rules of learncredits: no Django, no I/O, exact integers only.

Everything here is a function of its arguments, so it is unit-tested without a database
and reused by every write path (API, pages, CLI, worker).
"""
