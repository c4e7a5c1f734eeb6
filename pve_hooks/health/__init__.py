"""Node health checks: the Proxmox node, its API and services, and pve-hooks itself.

Each check returns a result.CheckResult (status OK/WARNING/CRITICAL/UNKNOWN,
a one-line reason, measured values and Nagios perfdata). ``pve-hooks health``
runs them by hand or as a Nagios/Icinga plugin; the daemon runs them through
runner.HealthRunner every heartbeat (the cheap ones each time, the pvesh
ones every ``health.pvesh_interval``) and sends the results with the heartbeat.

Checks (names accepted by ``--check``):

- ``pvesh_api``: ``pvesh get /nodes/{node}/status`` answers within ``health.pvesh_timeout``; latency (node.py).
- ``node_resources``: root file system, memory and 1-minute load per CPU from that status (node.py).
- ``cluster``: ``pvesh get /cluster/status``: quorum, this node online, nodes online (node.py).
- ``services``: ``systemctl is-active`` for ``health.services`` (node.py).
- ``hookscripts``: how many of this node's guests have the hookscript attached (node.py).
- ``reconciler``: the daemon's heartbeat in the status snapshot is recent (own.py).
- ``outbox``: depth, oldest event age, dead, quarantined and dropped events (own.py).
- ``breaker``: the AccountDB circuit breaker's state (own.py).
- ``whitelist``: age of the cached VMID whitelist (own.py).
- ``accountdb``: AccountDB's health endpoint answers; skipped when offline (own.py).

A check never raises: whatever goes wrong becomes UNKNOWN or CRITICAL with a reason.
"""
