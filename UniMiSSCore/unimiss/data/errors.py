"""The error of a bad input file."""
from __future__ import annotations


class InputError(ValueError):
    """A problem with an input file; the message is a single line that names the file."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))
