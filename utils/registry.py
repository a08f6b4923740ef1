"""One registry pattern for every family of components (objectives, distribution metrics, inits,
selectors, distillation losses).

A component registers under a name, optionally with an **options dataclass** (its own keys,
validated and documented like any config section) and **traits** (what it needs, e.g.
``needs_eager_attention=True``), so the code that runs components never tests their names:

    METRICS = Registry("distribution metric")

    @dataclass
    class MMDOptions:
        sigma: float = opt(1.0, "Kernel width.")

    @METRICS.register("mmd", options=MMDOptions, needs_frequencies=False)
    def mmd_loss(feat_real, feat_syn, sigma=1.0): ...

    entry = METRICS.entry("MMD")                       # names are case-insensitive
    opts = METRICS.options("mmd", {"sigma": 2.0}, where="condense.objectives[0].options")

A class may carry its options as a nested ``Options`` dataclass instead of ``options=``, and its
traits as class attributes (``entry.trait(name)`` reads either). Registering the same object under
the same name again is a no-op (modules may be imported twice); another object under a taken name
is refused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Generic, Iterator, Optional, TypeVar

from utils.errors import UserError

T = TypeVar("T")

#: kind -> the project's registry of that kind (those created with ``publish=True``), so that
#: `utils.config` can validate a spec's options at load time without importing the packages
#: that hold the components (utils imports no other project package). Filled on import of the
#: registering package; a kind not published yet is validated when the component is built.
PUBLISHED: Dict[str, "Registry"] = {}


def published(kind: str) -> Optional["Registry"]:
    """The published registry of `kind` ("objective", "init", ...), or None before its package
    was imported."""
    return PUBLISHED.get(kind)


def opt(default, help: str, metadata: Optional[dict] = None, **kw):
    """A field of a component's options dataclass, with its help text (like the schema's `_f`);
    `metadata={"resumable": True}` marks an option a resumed run may change (a cache, not a
    setting of the result)."""
    meta = {"help": help, "path": False, "flag": None, **(metadata or {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class NoOptions:
    """Options of a component that has none."""


@dataclass
class Entry(Generic[T]):
    """One registered component: the object, its options dataclass and its traits."""
    name: str
    obj: T
    options_cls: type = NoOptions
    traits: Dict[str, Any] = field(default_factory=dict)

    def trait(self, key: str, default: Any = None) -> Any:
        """A trait given at registration, else the object's attribute of that name."""
        if key in self.traits:
            return self.traits[key]
        return getattr(self.obj, key, default)

    @property
    def doc(self) -> str:
        return " ".join((self.obj.__doc__ or "").strip().split("\n\n")[0].split())


class Registry(Generic[T]):
    """Name -> component, for one family (`kind` names it in errors: "objective")."""

    def __init__(self, kind: str, case_insensitive: bool = True, publish: bool = False):
        self.kind = kind
        self.case_insensitive = case_insensitive
        self._entries: Dict[str, Entry[T]] = {}
        if publish:
            PUBLISHED[kind] = self

    def _key(self, name: str) -> str:
        return name.lower() if self.case_insensitive else name

    def register(self, name: str, obj: Optional[T] = None, *, options: Optional[type] = None,
                 **traits: Any):
        """Register `obj` under `name` (as a decorator when `obj` is omitted)."""
        def add(o: T) -> T:
            key = self._key(name)
            opts = options or getattr(o, "Options", None) or NoOptions
            if not dataclasses.is_dataclass(opts):
                raise TypeError(f"{self.kind} {name!r}: options must be a dataclass, got {opts!r}")
            old = self._entries.get(key)
            if old is not None:
                if old.obj is o:
                    return o                                     # same object again: no-op
                raise ValueError(f"{self.kind} {name!r} is already registered (by "
                                 f"{getattr(old.obj, '__qualname__', old.obj)!r})")
            self._entries[key] = Entry(name, o, opts, dict(traits))
            return o
        return add if obj is None else add(obj)

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list:
        return sorted(e.name for e in self._entries.values())

    def entries(self) -> list:
        return [self._entries[k] for k in sorted(self._entries)]

    def entry(self, name: str, where: str = "") -> Entry[T]:
        """The entry of `name`; a UserError naming the known names when there is none."""
        key = self._key(name) if isinstance(name, str) else None
        if key not in self._entries:
            prefix = f"{where}: " if where else ""
            raise UserError(f"{prefix}unknown {self.kind} {name!r}; registered: "
                            f"{', '.join(self.names()) or '(none)'}")
        return self._entries[key]

    def get(self, name: str, where: str = "") -> T:
        return self.entry(name, where).obj

    def options(self, name: str, values: Optional[dict] = None, where: str = "") -> Any:
        """`values` (a mapping from YAML) checked against the component's options dataclass:
        unknown keys and wrong types are refused naming `where` and the key; defaults fill in."""
        from utils.config import build_section  # late: utils.config imports the schema

        cls = self.entry(name, where).options_cls
        if isinstance(values, cls):                  # validated already (at config load)
            return values
        if dataclasses.is_dataclass(values):
            values = dataclasses.asdict(values)
        return build_section(cls, dict(values or {}), where or f"{self.kind} {name!r} options")

    def with_trait(self, key: str) -> list:
        """Names of the entries whose trait `key` is true (e.g. selectors that need features)."""
        return [e.name for e in self.entries() if e.trait(key)]
