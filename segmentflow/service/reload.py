"""A running worker's switch to a new configuration (SIGHUP, CONTRACT §6). No I/O.

:func:`engine_for` builds the engine of the new configuration and carries over what the
running one holds beyond the customer states, so a reload loses nothing a restart would keep:

- the RFM rank index (the same object: the store's rank sync is attached to it);
- the persona model, its pending samples and the inline-training switch (the worker's
  :class:`~segmentflow.streams.persona_sync.PersonaSync` is re-pointed at the new engine);
- the population of every other dimension whose kind and parameters are unchanged (e.g. the
  clv refit's per-customer figures and fitted parameters, through ``dump_population`` /
  ``load_population``); a dimension with changed parameters starts as after a restart;
- the rule error counters (metrics never go backwards);
- the processor's shared population refits (:func:`switch`: the shared ``clv`` refit is
  re-attached to the new ``clv`` dimension, adopting the stored parameters as a restart does;
  dropped when the new config has no refitting ``clv``).

:func:`refusal` names what a reload cannot do in place (turning RFM or personas on when the
worker started without their stores): the worker then keeps its configuration and says to
restart.
"""

from __future__ import annotations

from segmentflow.config import SegmentConfig
from segmentflow.engine.engine import PERSONA, RFM, Engine
from segmentflow.segmenters.clv import Clv
from segmentflow.service.clv_share import SharedClvRefit
from segmentflow.service.processor import Processor


def engine_for(config: SegmentConfig, old: Engine) -> Engine:
    """The engine for ``config``, carrying over ``old``'s in-process population state.

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> old = Engine(config_from_dict({"persona": {"enabled": False}}))
    >>> rules = [{"name": "big", "when": "revenue >= 100.0"}]
    >>> new = engine_for(config_from_dict({"persona": {"enabled": False}, "rules": rules}), old)
    >>> new.ranks is old.ranks, [r.name for r in new.rules]
    (True, ['big'])
    """
    engine = Engine(config, ranks=old.ranks)
    if engine.config.persona.enabled and old.persona is not None:
        engine.persona = old.persona
    engine.persona_samples = old.persona_samples
    engine.train_inline = old.train_inline
    engine.rule_errors.update(old.rule_errors)
    before = {dim.kind: dim for dim in old.registry}
    for dim in engine.registry:
        if dim.kind in (RFM, PERSONA):
            continue
        previous = before.get(dim.kind)
        if previous is None or type(previous) is not type(dim) or previous.params != dim.params:
            continue
        data = previous.dump_population()
        if data is not None:
            dim.load_population(data)
    return engine


def switch(processor: Processor, config: SegmentConfig, engine: Engine) -> None:
    """Run ``engine`` (from :func:`engine_for`) in ``processor`` and re-attach its shared
    population refits to the new dimensions (reads the store: run it off the event loop)."""
    processor.reconfigure(config, engine)
    for kind, share in list(processor.shares.items()):
        dim = next((d for d in engine.registry if d.kind == kind), None)
        if isinstance(share, SharedClvRefit) and isinstance(dim, Clv) and dim.sweep_every_us:
            share.dim = dim
            share.attach()
        else:
            del processor.shares[kind]


def refusal(config: SegmentConfig, rank_sync: bool, persona_store: bool) -> str | None:
    """Why the worker cannot switch to ``config`` in place (``None``: it can). ``rank_sync`` /
    ``persona_store``: whether the worker runs with the RFM rank sync / persona model store.

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> refusal(config_from_dict({"rfm": {"enabled": True}}), False, True) is not None
    True
    >>> refusal(config_from_dict({"persona": {"enabled": False}}), True, False) is None
    True
    """
    if config.rfm.enabled and not rank_sync:
        return (
            "the new config turns RFM on, but this worker started without it (its rank index "
            "is not loaded): restart the worker to apply it"
        )
    if config.persona.enabled and not persona_store:
        return (
            "the new config turns personas on, but this worker started without them (no "
            "persona model store): restart the worker to apply it"
        )
    return None
