"""The errors areaser raises for its users: one base, so a caller can catch them all.

Every error a user can fix (a bad file, a bad option, an unknown name) derives from
:class:`AreaserError`; its message is one line naming the file or value and the reason, and the
command line prints it as ``error: <message>`` with exit code 2, never a traceback. Each layer
keeps its own subclass (``AudioError``, ``ManifestError``, ``ConfigError``, ...) for callers that
want to tell them apart; most also derive from ``ValueError``, as they did before the base existed.
"""

from __future__ import annotations


class AreaserError(Exception):
    """Base of every error a user of areaser can fix; the message says what and what to do."""


class UnknownNameError(AreaserError, KeyError, ValueError):
    """A name that is not in a :class:`~areaser.core.registry.Registry`; the message lists the choices.

    Also a ``KeyError`` (it is a failed lookup) and a ``ValueError`` (what the lookups raised before).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
