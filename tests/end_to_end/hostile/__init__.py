"""Rows of the hostile-input table (tests/support/hostile.py), one module per area.

Importing this package registers every row.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(__name__ + '.' + _module.name)
