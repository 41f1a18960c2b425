"""The command line: thin wrappers that parse, then call one function of the package per command. Each module
registers its commands on the app, in the order ``--help`` lists them."""

from .common import app

# isort: off
from . import runs  # noqa: E402, F401  describe, train, sweep, status, bench
from . import reports  # noqa: E402, F401  table, compare, plot, report
# isort: on

__all__ = ["app"]
