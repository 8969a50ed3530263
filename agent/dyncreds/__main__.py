"""``python -m dyncreds``: the same CLI as ``dyncreds`` (commands/__init__.py), for
a venv or a checkout where the entry point is not on PATH."""

import sys

from dyncreds.commands import main

sys.exit(main())
