"""The one exception type for user errors.

Anything the user can fix (bad input, bad option) raises `PluralError` with a one-line message; the CLI
prints it and exits non-zero, without a traceback.
"""


class PluralError(Exception):
    """A user error with a one-line, actionable message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def where(file, column=None, row=None, line=None) -> str:
    """Format the location prefix of a data error: `file: column 'c', row 3 (line 4)`."""
    parts = [str(file)]
    loc = []
    if column is not None:
        loc.append(f"column '{column}'")
    if row is not None:
        loc.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
    return parts[0] + (": " + ", ".join(loc) if loc else "")
