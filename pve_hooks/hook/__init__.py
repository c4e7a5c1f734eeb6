"""The hookscript's hot path: argv -> event -> durable file in the outbox, nothing else.

Proxmox runs the hookscript (hookscripts/accountdb-hook) as root for every
guest start and stop, without a timeout, holding the guest's lock; a slow
hookscript is a slow start for every guest on the node. So this subpackage
(main, settings, miniyaml, event, spool, journal) and the one module it
takes its defaults from (pve_hooks.config.schema) follow two import rules,
written here once and referred to from every module that obeys them:

1. Standard library built-ins only: ``posix``, ``time``, ``fcntl``,
   ``_socket`` (built into Debian's python3). No ``json``, ``re``, ``enum``,
   ``logging``, ``yaml``, ``requests``, ``click``: each costs hundreds of
   microseconds to milliseconds of a ~13 ms start, and the third-party ones
   may be broken or missing on a node without it being our fault.
   ``subprocess`` is imported only when ``hook.chain_dir`` holds executables.
2. Not even ``os``. The hookscript runs as ``python3 -IS`` (isolated, no
   ``site``): processing site-packages (every .pth file, some of which
   import modules) is the largest part of a Python start, so nothing has
   imported ``os`` yet, and importing it (with ``_collections_abc``,
   ``stat``, ``posixpath``) costs about 1.2 ms. ``posix`` is the built-in
   module ``os`` wraps, loaded at interpreter start; its functions are the
   very objects ``os`` exports (``posix.write is os.write``), so callers may
   pass ``os.write`` and the daemon may use ``os`` freely. Paths are joined
   as strings for the same reason.

``python3 -IS -X importtime hookscripts/accountdb-hook 100 pre-start`` shows
what it loads; tests/integration/test_hookscript.py holds the hot path to
these rules, and benchmarks/hook_latency.py measures the start against a
bare interpreter's.

This file stays empty of code: it is imported on the hot path.
"""
