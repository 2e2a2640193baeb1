"""Every Redis key name the Redis adapters use, in one place (``ns`` = namespace).

The names are the stored layout: changing one orphans the data written under it, so they
change only together with a migration (``segmentflow migrate-layout``,
notes/cluster-design.md). Layout 2 (issue 17) is *partition-aligned*: every key a home
partition's work touches carries that partition's hash tag ``{ns:pP}``, so one partition's
commit is one ``MULTI`` on one Redis Cluster node (a single Redis simply holds every slot).
Each key is described where its adapter documents what it holds:

- per home partition ``P`` (:class:`PartKeys`): ``{ns:pP}:s:<id>`` (state), ``:due``,
  ``:outbox``, ``:pop``, ``:quarantine``, ``:alias``, ``:aliased:<id>``,
  ``:handover:<survivor>`` (:mod:`segmentflow.state.redis_store`); ``:rfm``, ``:rfm:log``
  (:mod:`segmentflow.state.redis_ranks`); ``:clv:rows:<bucket>``, ``:clv:version``
  (:mod:`segmentflow.state.redis_clv`); ``:mx:<dimension>\\x1f<value>`` and
  ``:mc:<dimension>\\x1f<value>\\x1e<bound>`` (layout 3: a segment's chunk directory and
  chunks, :mod:`segmentflow.state.member_chunks`; layout 2 had one sorted set
  ``:m:<dimension>\\x1f<value>``);
- the directory ``{ns:d<B>}`` (``B`` = CRC32 of the id mod 16384): hash id -> home partition,
  written once when a customer's home is claimed (:mod:`segmentflow.state.redis_store`);
- global keys, each used alone: ``ns:meta``, ``ns:partitions``, ``ns:layout``, ``ns:span``,
  ``ns:clv:fits|ready|lock``; and the persona model ``{ns:persona}:model|version|samples``
  (one tag, so a model and its version are saved in one ``MULTI``).

Layout 1 (before issue 17) is :class:`LegacyKeys`, read only by the migration; layout 3
(issue 13) differs from layout 2 only in the membership index.

Examples
--------
>>> keys = Keys("sf")
>>> keys.state("c-1", 3), keys.due(3), keys.part(3).pop, keys.part(0).rfm_log
('{sf:p3}:s:c-1', '{sf:p3}:due', '{sf:p3}:pop', '{sf:p0}:rfm:log')
>>> keys.segment(2, "lifecycle", "active"), keys.directory("c-1")
('{sf:p2}:mx:lifecycle\\x1factive', '{sf:d14014}')
"""

from __future__ import annotations

import re
import zlib

#: separator of a dimension and its value in field and key names
SEP = "\x1f"
#: buckets of the customer directory (id -> home partition): enough that a bucket stays a
#: compact listpack (Redis' ``hash-max-listpack-entries``, 128) up to about 2M customers
#: (measured: 15 B per customer at 1M, 31 B at 100k; 1024 buckets took 56 B at 1M)
DIRECTORY_BUCKETS = 16_384
#: the layout version this code reads and writes (``ns:layout``)
LAYOUT = 3


class _Prefixed:
    """Names built from a state prefix and a segment prefix (both layouts)."""

    __slots__ = ()
    state_prefix: str
    segment_prefix: str

    def state(self, customer_id: str) -> str:
        """A customer's packed state."""
        return self.state_prefix + customer_id

    def customer_of(self, state_key: str | bytes) -> str:
        """The customer id of a state key (as ``SCAN`` returns it).

        Examples
        --------
        >>> Keys("sf").part(1).customer_of(b"{sf:p1}:s:c:1")
        'c:1'
        """
        key = state_key.decode() if isinstance(state_key, bytes) else state_key
        return key[len(self.state_prefix) :]

    def segment(self, dimension: str, value: str) -> str:
        """A segment's membership key (layout 3: its chunk directory; layout 1: a sorted set
        customer id -> since)."""
        return f"{self.segment_prefix}{dimension}{SEP}{value}"

    def segment_of(self, key: str | bytes) -> tuple[str, str]:
        """(dimension, value) of a membership key.

        Examples
        --------
        >>> Keys("sf").part(0).segment_of(b"{sf:p0}:mx:rule:vip\\x1fin")
        ('rule:vip', 'in')
        """
        text = key.decode() if isinstance(key, bytes) else key
        dim, _, value = text[len(self.segment_prefix) :].partition(SEP)
        return dim, value


class PartKeys(_Prefixed):
    """The key names of one home partition (all under its hash tag ``{ns:pP}``)."""

    __slots__ = (
        "alias",
        "clv_version",
        "due",
        "layout2_segment_prefix",
        "outbox",
        "partition",
        "pop",
        "quarantine",
        "rfm",
        "rfm_log",
        "segment_prefix",
        "state_prefix",
        "tag",
    )

    def __init__(self, namespace: str, partition: int) -> None:
        self.partition = partition
        #: the hash tag every key of this partition starts with
        self.tag = tag = f"{{{namespace}:p{partition}}}"
        #: prefix of the customer state keys (``SCAN`` them with ``state_prefix + "*"``)
        self.state_prefix = f"{tag}:s:"
        #: sorted set customer id -> next due moment (epoch µs)
        self.due = f"{tag}:due"
        #: list of change events (CloudEvents JSON) committed and not yet published
        self.outbox = f"{tag}:outbox"
        #: hash ``<dimension>\x1f<value>`` -> customers homed here (summed over partitions)
        self.pop = f"{tag}:pop"
        #: hash customer id -> why its state cannot be decoded
        self.quarantine = f"{tag}:quarantine"
        #: hash merged-away id (homed here) -> the id it was merged into
        self.alias = f"{tag}:alias"
        #: hash customer id -> packed RFM metrics, and the stream of their updates
        self.rfm = f"{tag}:rfm"
        self.rfm_log = f"{tag}:rfm:log"
        #: number of clv row writes (summed over partitions: the population's version)
        self.clv_version = f"{tag}:clv:version"
        #: prefix of the membership index's chunk directories (one per segment)
        self.segment_prefix = f"{tag}:mx:"
        #: prefix of layout 2's membership sorted sets (read by ``migrate-layout``)
        self.layout2_segment_prefix = f"{tag}:m:"

    def __repr__(self) -> str:
        return f"PartKeys({self.tag!r})"

    def aliased(self, survivor: str) -> str:
        """The set of ids homed here that were merged directly into ``survivor``."""
        return f"{self.tag}:aliased:{survivor}"

    def handover(self, survivor: str) -> str:
        """The states of ids homed here handed over to a merge survivor's owner."""
        return f"{self.tag}:handover:{survivor}"

    def chunk_prefix(self, dimension: str, value: str) -> str:
        """The prefix of a segment's chunk keys (the chunk's bound follows).

        Examples
        --------
        >>> Keys("sf").part(1).chunk_prefix("lifecycle", "new")
        '{sf:p1}:mc:lifecycle\\x1fnew\\x1e'
        """
        return f"{self.tag}:mc:{dimension}{SEP}{value}\x1e"

    def layout2_segment(self, dimension: str, value: str) -> str:
        """Layout 2's membership sorted set of a segment (customer id -> since)."""
        return f"{self.layout2_segment_prefix}{dimension}{SEP}{value}"

    def clv_rows(self, bucket: int) -> str:
        """A bucket of this partition's clv population rows."""
        return f"{self.tag}:clv:rows:{bucket}"


class Keys:
    """The Redis key names of one namespace (``SEGMENTFLOW_NAMESPACE``).

    Parameters
    ----------
    namespace
        The key prefix; every key starts with ``namespace + ":"``, ``{namespace:`` or
        ``{namespace}:``.
    """

    __slots__ = (
        "_parts",
        "clv_fits",
        "clv_lock",
        "clv_ready",
        "layout",
        "meta",
        "namespace",
        "partitions",
        "persona_model",
        "persona_samples",
        "persona_version",
        "span",
    )

    def __init__(self, namespace: str) -> None:
        ns = namespace
        self.namespace = ns
        #: hash ``topic:partition`` -> incarnation record
        self.partitions = f"{ns}:partitions"
        #: hash of small persisted integers (sweep moments, config walk progress)
        self.meta = f"{ns}:meta"
        #: the stored layout's version (:data:`LAYOUT`; absent before issue 17)
        self.layout = f"{ns}:layout"
        #: sorted set: member ``partitions`` scored with the most home partitions written
        #: (``ZADD GT``), so a reader configured with fewer partitions still reads them all
        self.span = f"{ns}:span"
        persona = f"{{{ns}:persona}}"
        self.persona_samples = f"{persona}:samples"
        self.persona_model = f"{persona}:model"
        self.persona_version = f"{persona}:version"
        self.clv_fits = f"{ns}:clv:fits"
        self.clv_ready = f"{ns}:clv:ready"
        self.clv_lock = f"{ns}:clv:lock"
        self._parts: dict[int, PartKeys] = {}

    def __repr__(self) -> str:
        return f"Keys({self.namespace!r})"

    @property
    def everything(self) -> tuple[str, str]:
        """The two ``SCAN`` patterns that together match every key of the namespace."""
        ns = self.namespace
        return f"{ns}:*", f"{{{ns}:*"

    def part(self, partition: int) -> PartKeys:
        """The keys of home partition ``partition``."""
        keys = self._parts.get(partition)
        if keys is None:
            keys = self._parts[partition] = PartKeys(self.namespace, partition)
        return keys

    def directory(self, customer_id: str) -> str:
        """The directory bucket (hash id -> home partition) that holds ``customer_id``."""
        return self.directory_bucket(zlib.crc32(customer_id.encode("utf-8")) % DIRECTORY_BUCKETS)

    def directory_bucket(self, bucket: int) -> str:
        """Directory bucket number ``bucket``.

        Examples
        --------
        >>> keys = Keys("sf")
        >>> keys.directory_bucket(zlib.crc32(b"c-1") % DIRECTORY_BUCKETS) == keys.directory("c-1")
        True
        """
        return f"{{{self.namespace}:d{bucket}}}"

    @property
    def migrate_lock(self) -> str:
        """The lock one ``segmentflow migrate-layout`` run of the namespace holds."""
        return f"{self.namespace}:migrate-layout:lock"

    def state(self, customer_id: str, home: int) -> str:
        """A customer's packed state, under its home partition."""
        return self.part(home).state(customer_id)

    def due(self, shard: int) -> str:
        """The due index (sorted set id -> next due moment) of a home partition."""
        return self.part(shard).due

    def outbox(self, shard: int) -> str:
        """The outbox (list of CloudEvents JSON) of a home partition."""
        return self.part(shard).outbox

    def segment(self, partition: int, dimension: str, value: str) -> str:
        """A segment's membership key (its chunk directory) in one home partition."""
        return self.part(partition).segment(dimension, value)


class LegacyKeys(_Prefixed):
    """Layout 1 (no hash tags; before issue 17): what ``segmentflow migrate-layout`` reads.

    Examples
    --------
    >>> old = LegacyKeys("sf")
    >>> old.state("c-1"), old.due(3), old.pop, old.segment("lifecycle", "new")
    ('sf:s:c-1', 'sf:due:3', 'sf:pop', 'sf:m:lifecycle\\x1fnew')
    """

    def __init__(self, namespace: str) -> None:
        ns = self.namespace = namespace
        #: ``SCAN`` pattern of every layout 1 key (the namespace's wildcards escaped)
        self.everything = self.pattern("*")
        self.state_prefix = f"{ns}:s:"
        self.partitions = f"{ns}:partitions"
        self.meta = f"{ns}:meta"
        self.pop = f"{ns}:pop"
        self.quarantine = f"{ns}:quarantine"
        self.alias = f"{ns}:alias"
        self.rfm = f"{ns}:rfm"
        self.rfm_log = f"{ns}:rfm:log"
        self.persona_samples = f"{ns}:persona:samples"
        self.persona_model = f"{ns}:persona:model"
        self.persona_version = f"{ns}:persona:version"
        self.clv_version = f"{ns}:clv:version"
        self.clv_fits = f"{ns}:clv:fits"
        self.clv_ready = f"{ns}:clv:ready"
        self.clv_lock = f"{ns}:clv:lock"
        self.segment_prefix = f"{ns}:m:"

    def prefix(self, kind: str) -> str:
        """The prefix of the layout 1 keys of one kind (``s``, ``due``, ``aliased`` ...)."""
        return f"{self.namespace}:{kind}:"

    def pattern(self, suffix: str) -> str:
        """``SCAN MATCH`` pattern ``ns:<suffix>``, wildcards in the namespace escaped.

        Examples
        --------
        >>> LegacyKeys("a*b").pattern("due:*")
        'a\\\\*b:due:*'
        """
        return glob_escape(f"{self.namespace}:") + suffix

    def due(self, shard: int) -> str:
        return f"{self.namespace}:due:{shard}"

    def outbox(self, shard: int) -> str:
        return f"{self.namespace}:outbox:{shard}"

    def claim(self, customer_id: str) -> str:
        return f"{self.namespace}:claim:{customer_id}"

    def aliased(self, customer_id: str) -> str:
        return f"{self.namespace}:aliased:{customer_id}"

    def handover(self, survivor: str) -> str:
        return f"{self.namespace}:handover:{survivor}"

    def clv_rows(self, bucket: int) -> str:
        return f"{self.namespace}:clv:rows:{bucket}"


def glob_escape(text: str) -> str:
    """``text`` with the ``SCAN MATCH`` wildcards escaped.

    Examples
    --------
    >>> glob_escape("a*b[1]")
    'a\\\\*b\\\\[1\\\\]'
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
