"""The one error the server package raises."""

from __future__ import annotations


class ServerError(RuntimeError):
    """The server could not be started, or died; the message holds the end of its log."""
