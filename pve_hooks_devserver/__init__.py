"""The reference AccountDB (``pve-hooks dev-accountdb``): contract v1 on SQLite, with fault injection.

For trials, demos and tests; see docs/accountdb-api.md. Modules: ``server``
(the HTTP server, TLS, threads, statistics), ``handler`` (routing, endpoints,
admin, faults acted on), ``request`` (body and token of a request),
``contract`` (routes, limits, event validation), ``store`` (SQLite),
``faults`` (fault injection), ``command`` (``pve-hooks dev-accountdb``).
"""
