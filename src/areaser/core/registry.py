"""One registry for every family of named things: models, presets, protocols, label sets, corpora, studies.

A :class:`Registry` is a read-only mapping from name to item with one lookup that fails the same way
everywhere: ``registry[name]`` (or :meth:`Registry.lookup`) raises
:class:`~areaser.core.errors.UnknownNameError` naming the kind and listing the choices.

>>> colours = Registry("colour", {"red": 1})
>>> colours.register("blue", 2)
2
>>> colours["blue"], list(colours)
(2, ['red', 'blue'])
>>> colours["green"]
Traceback (most recent call last):
...
areaser.core.errors.UnknownNameError: unknown colour 'green'; choose one of: red, blue
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from areaser.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named items of one ``kind`` (used in the error message: ``"unknown <kind> 'x'"``), in registration order.

    Parameters
    ----------
    kind : what the items are, singular ("model", "protocol", ...).
    items : the first items, in order.
    """

    def __init__(self, kind: str, items: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        for name, item in (items or {}).items():
            self.register(name, item)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name, item=None):
        """Add ``item`` under ``name`` and return it; without ``item``, a decorator that does so.

        Raises ``ValueError`` if ``name`` is taken: a registry never silently replaces an entry.
        """
        if item is None:
            return lambda obj: self.register(name, obj)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, not {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._items[name] = item
        return item

    def lookup(self, name: str) -> T:
        """The item called ``name``; :class:`UnknownNameError` listing the choices if there is none."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._items)}") from None

    __getitem__ = lookup

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, [{', '.join(self._items)}])"
