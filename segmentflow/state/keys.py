"""Every Redis key name the Redis adapters use, in one place (``ns`` = namespace).

The names are the stored layout: changing one orphans the data written under it, so they
change only together with a migration (notes/cluster-design.md, issue 17). Each key is
described where its adapter documents what it holds:

- :mod:`segmentflow.state.redis_store`: ``ns:s:<id>`` (state), ``ns:due:<shard>``,
  ``ns:outbox:<shard>``, ``ns:claim:<id>``, ``ns:partitions``, ``ns:meta``, ``ns:pop``,
  ``ns:quarantine``, ``ns:alias``, ``ns:aliased:<id>``, ``ns:handover:<survivor>``;
- :mod:`segmentflow.state.redis_ranks`: ``ns:rfm``, ``ns:rfm:log``;
- :mod:`segmentflow.state.redis_personas`: ``ns:persona:samples|model|version``;
- :mod:`segmentflow.state.redis_clv`: ``ns:clv:rows:<bucket>``, ``ns:clv:version|fits|ready|
  lock``;
- :mod:`segmentflow.state.members`: ``ns:m:<dimension>\\x1f<value>``.

Examples
--------
>>> keys = Keys("sf")
>>> keys.state("c-1"), keys.due(3), keys.pop, keys.rfm_log
('sf:s:c-1', 'sf:due:3', 'sf:pop', 'sf:rfm:log')
>>> keys.segment("lifecycle", "active"), keys.clv_rows(7)
('sf:m:lifecycle\\x1factive', 'sf:clv:rows:7')
"""

from __future__ import annotations

#: separator of a dimension and its value in field and key names
SEP = "\x1f"


class Keys:
    """The Redis key names of one namespace (``SEGMENTFLOW_NAMESPACE``).

    Parameters
    ----------
    namespace
        The key prefix; every key starts with ``namespace + ":"``.
    """

    __slots__ = (
        "alias",
        "clv_fits",
        "clv_lock",
        "clv_ready",
        "clv_version",
        "everything",
        "meta",
        "namespace",
        "partitions",
        "persona_model",
        "persona_samples",
        "persona_version",
        "pop",
        "quarantine",
        "rfm",
        "rfm_log",
        "segment_prefix",
        "state_prefix",
    )

    def __init__(self, namespace: str) -> None:
        ns = namespace
        self.namespace = ns
        #: ``SCAN`` pattern of every key of the namespace
        self.everything = f"{ns}:*"
        #: prefix of the customer state keys (``SCAN`` them with ``state_prefix + "*"``)
        self.state_prefix = f"{ns}:s:"
        #: hash ``topic:partition`` -> incarnation record
        self.partitions = f"{ns}:partitions"
        #: hash of small persisted integers (sweep moments, config walk progress)
        self.meta = f"{ns}:meta"
        #: hash ``<dimension>\x1f<value>`` -> customers
        self.pop = f"{ns}:pop"
        #: hash customer id -> why its state cannot be decoded
        self.quarantine = f"{ns}:quarantine"
        #: hash merged-away id -> the id it was merged into
        self.alias = f"{ns}:alias"
        #: hash customer id -> packed RFM metrics, and the stream of their updates
        self.rfm = f"{ns}:rfm"
        self.rfm_log = f"{ns}:rfm:log"
        self.persona_samples = f"{ns}:persona:samples"
        self.persona_model = f"{ns}:persona:model"
        self.persona_version = f"{ns}:persona:version"
        self.clv_version = f"{ns}:clv:version"
        self.clv_fits = f"{ns}:clv:fits"
        self.clv_ready = f"{ns}:clv:ready"
        self.clv_lock = f"{ns}:clv:lock"
        #: prefix of the membership index keys (one sorted set per segment)
        self.segment_prefix = f"{ns}:m:"

    def __repr__(self) -> str:
        return f"Keys({self.namespace!r})"

    def state(self, customer_id: str) -> str:
        """A customer's packed state."""
        return self.state_prefix + customer_id

    def customer_of(self, state_key: str | bytes) -> str:
        """The customer id of a state key (as ``SCAN`` returns it).

        Examples
        --------
        >>> Keys("sf").customer_of(b"sf:s:c:1")
        'c:1'
        """
        key = state_key.decode() if isinstance(state_key, bytes) else state_key
        return key[len(self.state_prefix) :]

    def due(self, shard: int) -> str:
        """The due index (sorted set id -> next due moment) of a shard."""
        return f"{self.namespace}:due:{shard}"

    def outbox(self, shard: int) -> str:
        """The outbox (list of CloudEvents JSON) of a shard."""
        return f"{self.namespace}:outbox:{shard}"

    def claim(self, customer_id: str) -> str:
        """A new customer's home claim."""
        return f"{self.namespace}:claim:{customer_id}"

    def aliased(self, customer_id: str) -> str:
        """The set of ids merged directly into ``customer_id``."""
        return f"{self.namespace}:aliased:{customer_id}"

    def handover(self, survivor: str) -> str:
        """The states handed over to a merge survivor's owner."""
        return f"{self.namespace}:handover:{survivor}"

    def clv_rows(self, bucket: int) -> str:
        """A bucket of the clv population's rows."""
        return f"{self.namespace}:clv:rows:{bucket}"

    def segment(self, dimension: str, value: str) -> str:
        """A segment's membership sorted set (customer id -> since)."""
        return f"{self.segment_prefix}{dimension}{SEP}{value}"

    def segment_of(self, key: str | bytes) -> tuple[str, str]:
        """(dimension, value) of a membership key.

        Examples
        --------
        >>> Keys("sf").segment_of(b"sf:m:rule:vip\\x1fin")
        ('rule:vip', 'in')
        """
        text = key.decode() if isinstance(key, bytes) else key
        dim, _, value = text[len(self.segment_prefix) :].partition(SEP)
        return dim, value
