"""A segment's members in Redis as range-chunked compact hashes (layout 3, issue 13).

One big sorted set per segment costs ~106 B per member at 1M customers (a skiplist node and a
dict entry each, far past ``zset-max-listpack-entries``). Here a segment of one home partition
is a *directory* ``{ns:pP}:mx:<dimension>\\x1f<value>``, a sorted set of chunk *bounds* (all
scored 0, so ordered by their bytes), and per bound a *chunk*, the hash
``{ns:pP}:mc:<dimension>\\x1f<value>\\x1e<bound>`` of customer id -> since (epoch µs) holding
the members whose ids are ``>= bound`` and below the next bound (ids compared as bytes, as
Redis compares them). A chunk holds at most :data:`CHUNK` members, so Redis keeps it as a
listpack (~22 B per member); one that reaches it splits at its median id. The first bound is
the empty string, so every id has a chunk; an emptied chunk other than the first is dropped,
and a segment without members has no keys.

Members are found by id alone (a removal, ``forget``, a merge need not know since when the
customer entered), and pages list them in id order. All writes of one partition's commit are
one ``EVAL`` on the commit's ``MULTI`` (atomic with the state and the populations; on a
cluster every key of the script shares the partition's hash tag).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from segmentflow.state.keys import PartKeys

#: most members of one chunk: Redis' default ``hash-max-listpack-entries`` (128), so a chunk
#: stays a listpack (a hash that once grew past it never converts back)
CHUNK = 128

# Shared by the scripts: the bound of the chunk that holds (or would hold) an id (the greatest
# bound <= id), and memcmp order of two strings (Lua's `<` follows the server's locale).
_COMMON = """
local function bound_of(dir, id)
  return redis.call('ZRANGE', dir, '[' .. id, '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
end
local function lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""

# KEYS: directories. ARGV[1] = most members per chunk, ARGV[2] = '1' to add only absent
# members (never move one's since), then per directory: its chunk prefix, the number of
# removals r and of additions a, r ids, a (id, since) pairs; the ids of each list in byte order,
# so that the ids of one chunk are neighbours: one lookup per id, one write per chunk touched.
_WRITE_LUA = (
    _COMMON
    + """
local most, nx = tonumber(ARGV[1]), ARGV[2] == '1'
local function split(dir, prefix, bound)
  local key = prefix .. bound
  local flat = redis.call('HGETALL', key)
  local ids, since = {}, {}
  for j = 1, #flat, 2 do ids[#ids + 1] = flat[j]; since[flat[j]] = flat[j + 1] end
  table.sort(ids, lt)
  local half = math.floor(#ids / 2)
  local upper, moved = ids[half + 1], {}
  for j = half + 1, #ids do moved[#moved + 1] = ids[j]; moved[#moved + 1] = since[ids[j]] end
  redis.call('HSET', prefix .. upper, unpack(moved))
  redis.call('HDEL', key, unpack(ids, half + 1, #ids))
  redis.call('ZADD', dir, 0, upper)
end
local at, changed = 3, 0
for k = 1, #KEYS do
  local dir, prefix = KEYS[k], ARGV[at]
  local r, a = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  -- neighbouring ids in the same chunk are written by one HDEL / HSET (a lookup per id)
  local i, last, next_bound = at, at + r - 1, nil
  while i <= last do
    local bound = next_bound or bound_of(dir, ARGV[i])
    next_bound = nil
    if not bound then break end
    local j = i
    while j < last and j - i < 999 do
      next_bound = bound_of(dir, ARGV[j + 1])
      if next_bound ~= bound then break end
      next_bound = nil
      j = j + 1
    end
    local n = redis.call('HDEL', prefix .. bound, unpack(ARGV, i, j))
    changed = changed + n
    if n > 0 and bound ~= '' and redis.call('EXISTS', prefix .. bound) == 0 then
      redis.call('ZREM', dir, bound)
      next_bound = nil
    end
    i = j + 1
  end
  at = at + r
  i, last, next_bound = at, at + 2 * a - 2, nil
  while i <= last do
    local bound = next_bound or bound_of(dir, ARGV[i])
    next_bound = nil
    if not bound then redis.call('ZADD', dir, 0, ''); bound = '' end
    local key = prefix .. bound
    local held = redis.call('HLEN', key)
    local fields = {ARGV[i], ARGV[i + 1]}
    local j = i + 2
    while j <= last and #fields < 2 * (most - held) do
      next_bound = bound_of(dir, ARGV[j])
      if next_bound ~= bound then break end
      next_bound = nil
      fields[#fields + 1] = ARGV[j]; fields[#fields + 1] = ARGV[j + 1]; j = j + 2
    end
    local added = 0
    if nx then
      for f = 1, #fields, 2 do
        added = added + redis.call('HSETNX', key, fields[f], fields[f + 1])
      end
    else
      added = redis.call('HSET', key, unpack(fields))
    end
    changed = changed + added
    if held + added >= most then split(dir, prefix, bound); next_bound = nil end
    i = j
  end
  at = at + 2 * a
  if redis.call('ZCARD', dir) == 1 and redis.call('EXISTS', prefix) == 0 then
    redis.call('DEL', dir)
  end
end
return changed
"""
)

# KEYS[1] directory; ARGV[1] chunk prefix, ARGV[2] '1' when ARGV[3] is a cursor id, ARGV[4] n.
# The chunks from the cursor's on, until the chunks after the cursor's hold n members:
# flat (id, since) pairs in no order (the caller drops ids <= the cursor and sorts).
_PAGE_LUA = (
    _COMMON
    + """
local dir, prefix, n = KEYS[1], ARGV[1], tonumber(ARGV[4])
local start = ''
if ARGV[2] == '1' then start = bound_of(dir, ARGV[3]) end
if not start then start = '' end
local out, later, first, from = {}, 0, true, '[' .. start
while true do
  local bounds = redis.call('ZRANGE', dir, from, '+', 'BYLEX', 'LIMIT', 0, 32)
  if #bounds == 0 then return out end
  for _, bound in ipairs(bounds) do
    local flat = redis.call('HGETALL', prefix .. bound)
    for j = 1, #flat do out[#out + 1] = flat[j] end
    if not first then later = later + #flat / 2 end
    first = false
    if later >= n then return out end
  end
  from = '(' .. bounds[#bounds]
end
"""
)

# KEYS[1] directory; ARGV[1] chunk prefix: the number of members.
_COUNT_LUA = """
local total = 0
for _, bound in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + redis.call('HLEN', ARGV[1] .. bound)
end
return total
"""

# KEYS[1] directory; ARGV[1] chunk prefix, then ids: each id's since, or false.
_SINCE_LUA = (
    _COMMON
    + """
local out = {}
for i = 2, #ARGV do
  local bound = bound_of(KEYS[1], ARGV[i])
  out[i - 1] = bound and redis.call('HGET', ARGV[1] .. bound, ARGV[i]) or false
end
return out
"""
)


def _eval(target: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """``EVAL`` (not ``EVALSHA``: inside ``MULTI`` a script the server lost after a restart
    would fail alone while the rest of the transaction commits)."""
    return target.execute_command("EVAL", script, len(keys), *keys, *args)


def queue_writes(
    pipe: Any,
    keys: PartKeys,
    writes: Mapping[tuple[str, str], tuple[Iterable[str], Mapping[str, int]]],
    only_absent: bool = False,
    most: int = CHUNK,
) -> None:
    """Queue one partition's index writes on ``pipe``: per segment ``(dimension, value)``, the
    ids that leave it and the ids that enter it with their since (an id in both is moved:
    removals run first; the reply is the number of members removed plus those added).
    ``only_absent`` adds nobody already listed (``members --rebuild``);
    ``most`` is the chunk size (smaller only in tests, to make splits)."""
    dirs: list[str] = []
    args: list[Any] = [most, "1" if only_absent else "0"]
    for (dim, value), (removes, adds) in writes.items():
        gone = list(removes)
        if not gone and not adds:
            continue
        dirs.append(keys.segment(dim, value))
        gone.sort()  # code point order is UTF-8 byte order
        args += [keys.chunk_prefix(dim, value), len(gone), len(adds), *gone]
        for cid in sorted(adds):
            args += [cid, adds[cid]]
    if dirs:
        _eval(pipe, _WRITE_LUA, dirs, args)


def page_rows(
    client: Any, keys: PartKeys, dim: str, value: str, after: str | None, limit: int
) -> list[tuple[bytes, int]]:
    """The first ``limit`` members of one partition's segment with ids above ``after`` (all
    when ``None``): ``(id bytes, since)`` in id order."""
    cursor = after.encode() if after is not None else b""
    flat = _eval(
        client,
        _PAGE_LUA,
        [keys.segment(dim, value)],
        [keys.chunk_prefix(dim, value), "0" if after is None else "1", cursor, limit],
    )
    rows = [
        (cid, int(since))
        for cid, since in zip(flat[::2], flat[1::2], strict=True)
        if after is None or cid > cursor
    ]
    rows.sort()
    return rows[:limit]


def iter_rows(
    client: Any, keys: PartKeys, dim: str, value: str, page: int = 10_000
) -> Iterator[list[tuple[bytes, int]]]:
    """Every member of one partition's segment, ``page`` at a time, in id order."""
    after: str | None = None
    while True:
        rows = page_rows(client, keys, dim, value, after, page)
        if rows:
            yield rows
        if len(rows) < page:
            return
        after = rows[-1][0].decode()


def count(client: Any, keys: PartKeys, dim: str, value: str) -> int:
    """How many members one partition's segment has."""
    return int(
        _eval(client, _COUNT_LUA, [keys.segment(dim, value)], [keys.chunk_prefix(dim, value)])
    )


def queue_count(pipe: Any, keys: PartKeys, dim: str, value: str) -> None:
    """Queue :func:`count` on a pipeline (its reply is an int)."""
    _eval(pipe, _COUNT_LUA, [keys.segment(dim, value)], [keys.chunk_prefix(dim, value)])


def queue_since(pipe: Any, keys: PartKeys, dim: str, value: str, ids: Sequence[str]) -> None:
    """Queue the lookup of ``ids`` in one partition's segment (like ``ZMSCORE``); decode the
    reply with :func:`since_of`."""
    _eval(pipe, _SINCE_LUA, [keys.segment(dim, value)], [keys.chunk_prefix(dim, value), *ids])


def since_of(reply: Sequence[Any]) -> list[int | None]:
    """Each id's since in a :func:`queue_since` reply (``None``: not a member)."""
    return [None if since is None else int(since) for since in reply]
