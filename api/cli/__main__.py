"""`python -m vlsearch.api.cli`, as the tests and the crash harness start the command."""

import sys

from vlsearch.api.cli import app

sys.exit(app())
