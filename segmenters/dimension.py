"""The ``Dimension`` protocol: one segment type (lifecycle, RFM, persona, rules, or a user's).

A dimension is a small class, River style: its parameters (a pydantic model, :attr:`Params`)
are stored unchanged in :attr:`Dimension.params`; whatever it learns about a customer lives in
its own typed :class:`StateSlice` of :class:`~segmentflow.engine.state.CustomerState`; the
engine calls its hooks in registry order and stamps, numbers and records the changes it emits.
See ``docs/dimensions.md`` for the guide and ``notes/dimension-interface.md`` for the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from pydantic import BaseModel, ConfigDict

from segmentflow.engine.state import SLICE_TYPES, CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event

DAY_US = 86_400_000_000
#: a CEL variable: ``(state, today) -> value`` where ``today`` is the UTC day number
Getter = Callable[[CustomerState, int], Any]


class NoParams(BaseModel):
    """The config model of a dimension without parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Moment:
    """When (and why) a dimension is evaluated.

    ``t`` is the instant changes are stamped with (the customer's clock); ``event_id`` the
    causing event's id (``None``: time-driven); ``event`` the event itself (``None`` for due
    moments and sweeps).
    """

    t: int
    event_id: str | None = None
    event: Event | None = None
    #: ``"merge"`` when the customer is re-evaluated after an identity merge (CONTRACT §3
    #: "Identity"; ``event`` is then ``None``, ``event_id`` the merging event's), else ``None``
    cause: str | None = None


class Emit(Protocol):
    """The engine's change factory: bumps ``state.seqs[dimension]``, records the value."""

    def __call__(
        self,
        state: CustomerState,
        dimension: str,
        value: str,
        at: Moment,
        reason: dict[str, Any],
        previous: str | None = None,
    ) -> Change: ...


class StateSlice:
    """A dimension's typed, versioned slice of customer state (subclass as a dataclass).

    :meth:`dump` gives a compact positional list; :meth:`load` must read every version ever
    written (bump :attr:`version` when the layout changes).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(slots=True)
    ... class Seen(StateSlice):
    ...     count: int = 0
    ...     def dump(self) -> list[Any]:
    ...         return [self.count]
    ...     @classmethod
    ...     def load(cls, version: int, data: list[Any]) -> "Seen":
    ...         return cls(*data)
    >>> Seen.load(Seen.version, Seen(3).dump())
    Seen(count=3)
    """

    version: ClassVar[int] = 1

    def dump(self) -> list[Any]:
        """The slice as a compact JSON-able list."""
        raise NotImplementedError

    @classmethod
    def load(cls, version: int, data: list[Any]) -> Self:
        """Read a slice dumped by any version of this class."""
        raise NotImplementedError


class Dimension(ABC):
    """Base class of every dimension. Subclasses set :attr:`kind` and :attr:`Params` and
    override the hooks they need; every hook has a no-op default.

    Parameters
    ----------
    params
        An instance of :attr:`Params` (validated config), stored unchanged.

    Examples
    --------
    >>> class Visits(Dimension):
    ...     kind = "visits"
    ...     def names(self) -> list[str]:
    ...         return ["visits"]
    >>> Visits(NoParams()).names(), Visits.kind
    (['visits'], 'visits')
    """

    #: registry key and the name of the config entry
    kind: ClassVar[str] = ""
    #: the config model of the parameters
    Params: ClassVar[type[BaseModel]] = NoParams
    #: the typed state slice, if the dimension keeps per-customer state of its own
    slice_type: ClassVar[type[StateSlice] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind and cls.slice_type is not None:  # so that stored slices decode typed
            SLICE_TYPES[cls.kind] = cls.slice_type

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @abstractmethod
    def names(self) -> list[str]:
        """The dimensions it emits (e.g. ``["lifecycle"]`` or ``["rule:vip", ...]``)."""

    # -- per customer -------------------------------------------------------------------------

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        """Update the dimension's own state from ``event`` (applied at clock ``t``); called
        after the core counters, before any dimension evaluates."""
        return None

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        """Re-evaluate after an event; return the changes (made with ``emit``)."""
        return []

    def next_due(self, state: CustomerState, after: int) -> int | None:
        """The earliest moment strictly after ``after`` when its value may change with time
        alone (``None``: never)."""
        return None

    def on_due(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        """Called at every due moment of the customer (of any dimension): return the changes
        due at ``at.t`` (``[]`` when the moment is not its own)."""
        return []

    # -- rules and inspect --------------------------------------------------------------------

    def variables(self) -> Mapping[str, Getter]:
        """The CEL variables it contributes (name -> getter)."""
        return {}

    def time_dependent(self) -> frozenset[str]:
        """Its variables that can change with time alone (rules using them run at midnight)."""
        return frozenset()

    def explain(
        self,
        state: CustomerState,
        name: str,
        value: str | None,
        t: int,
        env: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """Why ``state`` has ``value`` in dimension ``name`` at ``t`` (for ``inspect``)."""
        return None

    # -- in-process state beyond the customers' slices (models, indexes) --------------------

    def dump_population(self) -> bytes | None:
        """What a restart needs besides the customer states (``None``: nothing); the worker
        keeps it in its own stores (RFM rank sync, persona model store)."""
        return None

    def load_population(self, data: bytes) -> None:
        """Restore what :meth:`dump_population` gave."""
        return None

    # -- state slice --------------------------------------------------------------------------

    def slice(self, state: CustomerState) -> Any:
        """The customer's typed slice (created, or decoded from storage, on first use)."""
        held = state.slices.get(self.kind)
        if held is None or isinstance(held, list):
            kind = self.slice_type
            if kind is None:
                raise TypeError(f"dimension {self.kind!r} declares no slice_type")
            made = self.migrate(state) if held is None else kind.load(held[0], held[1:])
            held = state.slices[self.kind] = made if made is not None else kind()
        return held

    def migrate(self, state: CustomerState) -> StateSlice | None:
        """A slice from fields of older encodings (e.g. ``state.extra``), or ``None``."""
        return None

    def merge_slice(self, survivor: CustomerState, merged: CustomerState) -> None:
        """Fold ``merged``'s slice into ``survivor``'s (an identity merge, CONTRACT §3
        "Identity"; the core fields are merged already, the dimension evaluates next with
        ``Moment.cause == "merge"``). Default: a survivor without a slice takes ``merged``'s,
        otherwise it keeps its own; a slice that summarises history (counts, sums, decayed
        scores) should override this and combine both.
        """
        if self.kind in merged.slices and self.kind not in survivor.slices:
            held = merged.slices[self.kind]
            survivor.slices[self.kind] = (
                list(held) if isinstance(held, list) else type(held).load(held.version, held.dump())
            )


class PopulationWork:
    """Mixin of a dimension with population-wide work (sweeps), such as RFM."""

    #: event-time period of the sweep (``None``: no sweep); RFM's is the processor's
    #: ``next_sweep`` schedule, every other dimension's is a schedule of its own (``next_refit``)
    sweep_every_us: int | None = None

    def population_version(self) -> object:
        """Unchanged since the last sweep means a sweep now moves nobody."""
        return None

    def population_size(self) -> int:
        """How many customers the population holds (no sweep is scheduled while empty)."""
        return 0

    def prepare_sweep(self, at: int) -> None:
        """Called at a sweep moment ``at``, before :meth:`moved` (a model refit happens here)."""
        return None

    def moved(self, include: Callable[[str], bool] | None) -> list[tuple[str, Any]]:
        """The customers (accepted by ``include``) a sweep now touches, with a payload each."""
        return []

    def on_sweep(self, state: CustomerState, at: Moment, payload: Any, emit: Emit) -> list[Change]:
        """Apply a sweep's payload to one customer."""
        return []

    def forget(self, customer_id: str) -> None:
        """Drop an erased customer from the population structures."""
        return None


def params_of(cls: type[Dimension], data: Mapping[str, Any]) -> BaseModel:
    """Validate ``data`` with ``cls.Params`` (raises ``pydantic.ValidationError``)."""
    return cls.Params.model_validate(dict(data))
