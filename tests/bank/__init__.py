"""The bank test with faults: load, worker kills and a PostgreSQL restart, then invariants.

See docs/reliability.md. ``harness.py`` holds the reusable machinery and the long-form CLI
(``python -m tests.bank.harness --long``); ``test_bank.py`` is the short form run by
``make test`` and the negative control.
"""
