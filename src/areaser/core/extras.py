"""Optional dependencies: an extra's module imported where a verb needs it, or one line saying what to install.

The core install trains, evaluates and predicts; ``serve``, ``export`` and ``synth`` are extras
(``pip install 'areaser[serve]'``; ``pyproject.toml`` lists what each holds).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from areaser.core.errors import AreaserError


class MissingExtraError(AreaserError, ImportError):
    """A verb needs an optional dependency that is not installed; the message names the extra."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtraError` naming ``extra`` and the command that installs it.

    >>> require("json", "serve", "the service").__name__
    'json'
    >>> require("no_such_module_here", "serve", "areaser serve")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    areaser.core.extras.MissingExtraError: areaser serve needs the 'serve' extra (...): pip install 'areaser[serve]'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs the {extra!r} extra ({module} is not installed): pip install 'areaser[{extra}]'"
        ) from None
