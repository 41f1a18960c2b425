"""Named plug-ins of one kind: shortcut kinds, activations, norms, trackers. Each registry is the only list of its
names: the config accepts a name it holds, validation names the others, and a new entry is one registration
(docs/architecture.md, "Recipes")."""

from __future__ import annotations

from collections.abc import Callable


class Registry(dict):
    """``name -> factory``, filled by ``register``."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what  # the setting that names an entry: "shortcut", "act", "norm", "logger"

    def register(self, name: str, factory: Callable | None = None):
        """Add ``factory`` under ``name`` (or, without it, decorate the factory to add); a name taken is a KeyError."""

        def add(f: Callable) -> Callable:
            if name in self:
                raise KeyError(f"{self.what} {name!r} is already registered")
            self[name] = f
            return f

        return add if factory is None else add(factory)

    def get_valid(self, name: str) -> Callable:
        """The entry ``name``; else a one-line ValueError naming the valid ones."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self)}")
        return self[name]
