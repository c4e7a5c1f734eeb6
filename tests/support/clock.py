"""A controllable clock for tests: call it for the time; set or advance ``now``."""

T0 = 1795689326.0  # 2026-11-26T10:35:26Z


class Clock:
    """Callable returning ``now`` (epoch seconds); tests move ``now`` by hand."""

    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now
