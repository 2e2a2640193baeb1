"""The dimension registry: built-in dimensions, user classes named in the config, and the order
the engine runs them in (``lifecycle``, ``rfm``, ``persona``, the config's ``dimensions:`` in
order, then ``rules``, which may read every other dimension's variables). The opt-in built-ins
``clv`` and ``interest`` are enabled by name (``dimensions: [{kind: clv}]``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError

from segmentflow.segmenters.clv import Clv
from segmentflow.segmenters.dimension import Dimension, Getter
from segmentflow.segmenters.features import GETTERS, TIME_DEPENDENT
from segmentflow.segmenters.interest import Interest
from segmentflow.segmenters.lifecycle import Lifecycle
from segmentflow.segmenters.persona import Persona
from segmentflow.segmenters.rfm import Rfm
from segmentflow.segmenters.rules import Rules, RulesParams

if TYPE_CHECKING:
    from segmentflow.config import SegmentConfig

#: kind -> class of every known dimension (built-ins; :func:`register` adds more)
REGISTRY: dict[str, type[Dimension]] = {
    cls.kind: cls for cls in (Lifecycle, Rfm, Persona, Rules, Clv, Interest)
}
#: the registered kinds a config enables by name (``dimensions: [{kind: ...}]``); the others
#: always run, configured in their own sections
OPT_IN = ("clv", "interest")


def register(cls: type[Dimension]) -> type[Dimension]:
    """Class decorator: add a dimension class to :data:`REGISTRY` (for the check suite and
    tools that list dimensions; a config enables it by ``kind`` once it is in :data:`OPT_IN`
    or by ``class``)."""
    REGISTRY[cls.kind] = cls
    return cls


def registered_class(kind: str, where: str = "dimension") -> type[Dimension]:
    """The registered dimension a config entry names by ``kind`` (``ConfigError`` if none).

    Examples
    --------
    >>> registered_class("clv").__name__
    'Clv'
    >>> registered_class("lifecycle")
    Traceback (most recent call last):
    ...
    segmentflow.config.ConfigError: dimension (kind 'lifecycle'): not an opt-in dimension; the ones a `kind:` entry enables are clv, interest (lifecycle, rfm, persona and rules have their own config sections; a class of your own goes in `class:`)
    """  # noqa: E501
    from segmentflow.config import ConfigError

    if kind not in OPT_IN:
        known = ", ".join(OPT_IN)
        what = "not an opt-in dimension" if kind in REGISTRY else "no such dimension"
        raise ConfigError(
            f"{where} (kind {kind!r}): {what}; the ones a `kind:` entry enables are {known} "
            "(lifecycle, rfm, persona and rules have their own config sections; a class of "
            "your own goes in `class:`)"
        )
    return REGISTRY[kind]


def load_class(spec: str, where: str = "dimension") -> type[Dimension]:
    """Import ``"package.module:Class"`` and check it is a :class:`Dimension` subclass.

    Raises ``ConfigError`` saying what to fix.

    Examples
    --------
    >>> load_class("segmentflow.segmenters.lifecycle:Lifecycle").kind
    'lifecycle'
    >>> load_class("segmentflow.segmenters.lifecycle:stage_at")
    Traceback (most recent call last):
    ...
    segmentflow.config.ConfigError: dimension (class 'segmentflow.segmenters.lifecycle:stage_at'): not a subclass of segmentflow.segmenters.dimension.Dimension
    """  # noqa: E501
    from segmentflow.config import ConfigError

    module_name, _, attr = spec.partition(":")
    label = f"{where} (class {spec!r})"
    if not module_name or not attr:
        raise ConfigError(f"{label}: write the class as 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code
        raise ConfigError(
            f"{label}: cannot import module {module_name!r} ({exc.__class__.__name__}: {exc}); "
            "install it or put its folder on PYTHONPATH"
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"{label}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Dimension)):
        raise ConfigError(f"{label}: not a subclass of segmentflow.segmenters.dimension.Dimension")
    if not cls.kind:
        raise ConfigError(f"{label}: the class sets no `kind` (its registry name)")
    return cls


def build_dimensions(config: SegmentConfig) -> list[Dimension]:
    """The dimensions of ``config``, in engine order, rules compiled against every variable.

    Raises ``ConfigError`` naming the ``dimensions[i]`` entry (or rule) at fault.
    """
    from segmentflow.config import ConfigError, describe_validation

    dims: list[Dimension] = [
        Lifecycle(config.lifecycle),
        Rfm(config.rfm),
        Persona(config.persona),
    ]
    for i, entry in enumerate(config.dimensions):
        where = f"dimensions[{i}]"
        if entry.class_ is not None:
            cls = load_class(entry.class_, where)
        else:
            assert entry.kind is not None
            cls = registered_class(entry.kind, where)
        if any(d.kind == cls.kind for d in dims) or cls.kind == Rules.kind:
            raise ConfigError(
                f"{where} ({entry.label}): kind {cls.kind!r} is already taken; "
                "give the class another `kind` (or list the dimension once)"
            )
        try:
            params = cls.Params.model_validate(entry.params())
        except ValidationError as exc:
            raise ConfigError(f"{where} ({entry.label}): {describe_validation(exc)}") from None
        dims.append(cls(params))
    getters, timed = _variables(dims)
    rules = Rules(RulesParams(rules=config.rules))
    rules.bind(getters, timed)
    dims.append(rules)
    return dims


def _variables(dims: list[Dimension]) -> tuple[dict[str, Getter], frozenset[str]]:
    from segmentflow.config import ConfigError

    getters: dict[str, Getter] = dict(GETTERS)
    timed = set(TIME_DEPENDENT)
    for dim in dims:
        contributed: Mapping[str, Getter] = dim.variables()
        clash = sorted(contributed.keys() & getters.keys())
        if clash:
            raise ConfigError(
                f"dimension {dim.kind!r}: variable(s) {', '.join(clash)} already defined; "
                "rename them"
            )
        getters.update(contributed)
        timed |= dim.time_dependent() & contributed.keys()
    return getters, frozenset(timed)


@functools.cache
def builtin_variables() -> tuple[dict[str, Getter], frozenset[str]]:
    """Every CEL variable of a default config (core §6 and the built-in dimensions')."""
    from segmentflow.config import LifecycleConfig, PersonaConfig, RfmConfig

    built: list[Dimension] = [
        Lifecycle(LifecycleConfig()),
        Rfm(RfmConfig(enabled=False)),
        Persona(PersonaConfig(enabled=False)),
    ]
    return _variables(built)
