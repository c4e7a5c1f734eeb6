"""The reference AccountDB (``pve-hooks dev-accountdb``): contract v1 on SQLite, with fault injection.

For trials, demos and tests; see docs/accountdb-api.md. Modules: ``app``
(HTTP server), ``store`` (SQLite), ``faults`` (fault injection).
"""
