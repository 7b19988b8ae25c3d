"""A named-parts registry (the timm ``create_model`` pattern), one style for every kind of part.

Each kind of part (backbone weights, adapter, head, data source, codec, strategy) keeps one
``Registry``; a new part is one file that decorates its factory (a class or a function)::

    @ADAPTERS.register("film")
    class FiLM(Adapter): ...

    ADAPTERS.create("film", positions="fit")     # keyword options pass through to the factory

``create`` checks the keyword options against the factory's signature first: an unknown option is
a ``RegistryError`` naming the part's options, an unknown name one listing every registered name.

A registry given a ``package`` imports it when first asked for a name (its parts register themselves
there): so modules below the parts can look them up by name without importing them. ``METHODS`` is
one: the methods (``fedfit.methods``) use option resolution and the client's model
(``fedfit.config``, ``fedfit.federated``), which ask for a method's facts by name.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown part name or an option the part does not take. ``str()`` is the plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind, self.package = kind, package
        self._items: dict[str, Callable[..., T]] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def _load(self) -> None:
        """Import ``package`` once (its parts register themselves), before the first look-up."""
        if self.package is not None:
            package, self.package = self.package, None
            importlib.import_module(package)

    def register(self, name: str, **defaults: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name``; ``defaults`` are keyword options bound to
        this name (``register("film-all-norms", positions="all-norms")`` on the FiLM class)."""
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            self._defaults[name] = dict(defaults)
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        self._load()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def options(self, name: str) -> list[str]:
        """Keyword options the factory of ``name`` takes (those bound at registration excluded)."""
        params = _parameters(self.get(name))
        return [p for p in params if p not in self._defaults[name]] if params is not None else []

    def check(self, name: str, **kwargs: Any) -> None:
        """Raise RegistryError for an unknown name or an option the factory does not take."""
        params = _parameters(self.get(name))
        if params is None:  # the factory takes **kwargs: it checks them itself
            return
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            opts = self.options(name)
            raise RegistryError(f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}; "
                                f"its options: {', '.join(opts) or 'none'}")

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        self.check(name, **kwargs)
        return self.get(name)(*args, **{**self._defaults[name], **kwargs})

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self):
        return iter(self.names())


def _parameters(fn: Callable[..., Any]) -> list[str] | None:
    """Names of the keyword parameters of ``fn`` (a class: its ``__init__``); None if it takes **kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


METHODS: Registry[Any] = Registry("method", package="fedfit.methods")  # fedfit.methods.base.Method classes
