"""Registries by name: models, datasets, optimizers, schedules, objective terms."""

import difflib
from typing import Callable, Generic, TypeVar

from jaxkd.errors import JaxkdError

T = TypeVar("T")


class Registry(Generic[T]):
  """A name -> object table whose lookup errors list what is known."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(obj: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} '{name}' is registered twice")
      self._items[name] = obj
      return obj

    return add

  def get(self, name: str) -> T:
    if name not in self._items:
      known = ", ".join(sorted(self._items))
      close = difflib.get_close_matches(str(name), self._items, n=3)
      hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
      raise JaxkdError(f"unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {known}.")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items
