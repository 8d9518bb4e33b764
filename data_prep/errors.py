"""The one exception type for problems in the data a user gave us.

Every reader and artifact check raises a subclass of :class:`DataError` whose message names
the file (and zip member), the row and column where known, and what was expected. The CLI
prints such an error as ``sepsis <command>: <message>`` and exits 1, without a traceback
(``-vv`` shows it).
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file[, row, column] and what was expected."""
