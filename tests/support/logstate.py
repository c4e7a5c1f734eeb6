"""Put the process-wide logging state back after a test that ran logsetup.configure()."""

import contextlib
import logging


@contextlib.contextmanager
def restored_logging():
    """Save the root logger's handlers and level and urllib3's level; restore them on exit.

    Handlers added meanwhile are removed and closed; warnings capture is turned off.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    urllib3_level = logging.getLogger('urllib3').level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        logging.getLogger('urllib3').setLevel(urllib3_level)
        logging.captureWarnings(False)
