"""Cache-aside of resolved documents in Redis, as the bytes that are sent, with consumer scan counters.

Redis is an accelerator, never the source of truth: every error or timeout on the read path is
logged, counted and answered as a miss, and for a short while afterwards the cache is skipped
altogether so that a dead Redis costs a scan nothing. Scan counters live here between flushes
to Postgres (see resolver.scan.scans).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from cache import keys
from cache.local import LocalTier, ScanState
from cache.resp import RespClient, pack

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# Add one worker's scans of many codes since its last sync.
# KEYS: Redis's generation (a token, made here when missing: a Redis that lost its data lacks it, so workers learn of
# the loss), per scan pair (keys.ScanSlot) its hash and bitmap, then the bitmaps to read.
# ARGV: the pairs' TTL, the places window, the most places kept, now (epoch s), the number of pairs; per pair: the
# number of its codes, and per code: its bit (its member's name too), the pair's epoch this worker last added the
# code's scans to, those of its scans not yet in Postgres, and the member its new scans alone would make, "{scans}
# {first_at} {now} {places}" (keys.ScanSlot); last, a new generation, used if there is none.
# A pair gets a new epoch when it is rebuilt from Postgres (_REBUILD_SCANS): scans added to an older one and not yet
# in Postgres are added again. A code never scanned gets its member as sent, any other's is merged into. A pair's
# members are read, written and marked with one command each.
# Answers per pair: per code false (written as sent), the merged member, or -1 when the pair was lost (Redis
# restarted, evicted or expired it: nothing is added to it until it has been rebuilt), then the pair's epoch; then
# the bitmaps asked for, then the generation. Touches keys of many codes: on a Redis Cluster the sync would have to
# send one call per pair instead (see "Known limits" in the README).
_ADD_SCANS = """
local answers, at = {}, 6
local ttl, window, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now, pair_count = tonumber(ARGV[4]), tonumber(ARGV[5])
local match, find, gsub, gmatch = string.match, string.find, string.gsub, string.gmatch
local pattern = '^(%d+) (%S+) (%d+) ?(.*)$'
for pair = 1, pair_count do
    local key, bits, codes = KEYS[2 * pair], KEYS[2 * pair + 1], tonumber(ARGV[at])
    local first = at + 1
    at = first + 4 * codes
    if redis.call('EXISTS', bits) == 1 then
        local members = {}
        for i = 1, codes do members[i] = ARGV[first + 4 * i - 4] end
        local values = redis.call('HMGET', key, 'e', unpack(members))
        local epoch = values[1] or ''
        local writes, marks = {}, {}
        for i = 1, codes do
            local a = first + 4 * i - 4
            local add, first_at, _, mine = match(ARGV[a + 3], pattern)
            add = tonumber(add)
            if ARGV[a + 1] ~= epoch then add = add + tonumber(ARGV[a + 2]) end
            local value = values[i + 1]
            if value then
                local c, f, s, p = match(value, pattern)
                local count, since, places, seen = tonumber(c) + add, tonumber(s), p, 0
                if f < first_at then first_at = f end
                if now - since >= window then since, places = now, '' end
                if places ~= '' then seen = select(2, gsub(places, ',', ',')) + 1 end
                for place in gmatch(mine, '[^,]+') do
                    if seen >= most then break end
                    if seen == 0 then
                        places, seen = place, 1
                    elseif not find(',' .. places .. ',', ',' .. place .. ',', 1, true) then
                        places, seen = places .. ',' .. place, seen + 1
                    end
                end
                value = count .. ' ' .. first_at .. ' ' .. since .. ' ' .. places
                answers[#answers + 1] = value
            else
                value = add .. ' ' .. first_at .. ' ' .. now .. ' ' .. mine
                answers[#answers + 1] = false
            end
            writes[2 * i - 1], writes[2 * i] = members[i], value
            marks[4 * i - 3], marks[4 * i - 2], marks[4 * i - 1], marks[4 * i] = 'SET', 'u1', members[i], 1
        end
        redis.call('HSET', key, unpack(writes))
        redis.call('BITFIELD', bits, unpack(marks))
        redis.call('EXPIRE', key, ttl)
        redis.call('EXPIRE', bits, ttl)
        answers[#answers + 1] = epoch
    else
        for i = 1, codes do answers[#answers + 1] = -1 end
        answers[#answers + 1] = ''
    end
end
for i = 2 * pair_count + 2, #KEYS do answers[#answers + 1] = redis.call('GET', KEYS[i]) or false end
local generation = redis.call('GET', KEYS[1])
if not generation then
    generation = ARGV[at]
    redis.call('SET', KEYS[1], generation)
end
answers[#answers + 1] = generation
return answers
"""
SYNC_CHUNK = 500  # codes per call of _ADD_SCANS: a script holds Redis up while it runs

# Make lost scan pairs whole again from Postgres's counts, with a new epoch, unless another worker did meanwhile;
# answer the asked members as they then stand, and the bitmaps. KEYS: per pair its hash and bitmap. ARGV: their TTL,
# members per HSET, the new epoch, then per pair: the bitmap from Postgres, the number of members from Postgres,
# those members and their values, the number of members asked, those members.
_REBUILD_SCANS = """
local answers, at, step = {}, 4, 2 * tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
    local key, bits, n = KEYS[i], KEYS[i + 1], tonumber(ARGV[at + 1])
    if redis.call('EXISTS', bits) == 0 then
        redis.call('DEL', key)
        redis.call('HSET', key, 'e', ARGV[3])
        for j = at + 2, at + 1 + 2 * n, step do
            redis.call('HSET', key, unpack(ARGV, j, math.min(j + step - 1, at + 1 + 2 * n)))
        end
        redis.call('EXPIRE', key, ARGV[1])
        redis.call('SET', bits, ARGV[at], 'EX', ARGV[1])
    end
    at = at + 2 + 2 * n
    for j = at + 1, at + tonumber(ARGV[at]) do answers[#answers + 1] = redis.call('HGET', key, ARGV[j]) or false end
    answers[#answers + 1] = redis.call('GET', bits)
    at = at + 1 + tonumber(ARGV[at])
end
return answers
"""
REBUILD_MEMBERS_PER_HSET = 500  # Lua's unpack takes a few thousand values at most

# Drop every cached document of a batch. Touches keys it reads from the set, so on a Redis Cluster
# it needs the documents to be invalidated one by one instead (see "Known limits" in the README).
_INVALIDATE_BATCH = """
local codes = redis.call('SMEMBERS', KEYS[1])
for _, code in ipairs(codes) do redis.call('DEL', ARGV[1] .. '{' .. code .. '}') end
redis.call('DEL', KEYS[1])
if #codes > 0 or ARGV[4] == '1' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return #codes
"""


@dataclass(frozen=True, slots=True)
class Scans:
    """Consumer scans of a code: how many, since when, and from how many networks in the current window."""

    count: int
    first_at: str | None
    places: int = 0

    @property
    def is_suspicious(self) -> bool:
        return self.places >= keys.PLACES_WARNING


NO_SCANS = Scans(0, None)


@dataclass(frozen=True, slots=True)
class Fetched:
    document: bytes | None  # a document, keys.NEGATIVE, or None: not asked for, or not in Redis
    batch_id: int  # 0 without a document
    version: int  # the batch's version the document shows (0 without one)
    scans: Scans | None  # Redis's counters of the code as they stand; None: not asked, or its pair was lost
    scanned: bytes | None  # the bitmap of the code's scan pair (keys.ScanSlot); None: not asked, or lost


def is_scanned(bits: bytes, bit: int) -> bool:
    """Bit `bit` of a bitmap as Redis's SETBIT numbers them (the first byte's high bit is 0)."""
    byte = bit >> 3
    return byte < len(bits) and bool(bits[byte] & (0x80 >> (bit & 7)))


def _pair_of(sent: tuple[ScanState, int, list[str]]) -> str:
    return sent[0].slot.key


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def unpack_scans(member: bytes | None, now_s: float) -> Scans:
    """The counters in a scan hash's member (keys.ScanSlot) at `now_s`; no member: never scanned."""
    if member is None:
        return NO_SCANS
    count, first_at, since, places = member.decode().split(" ", 3)
    seen = places.count(",") + 1 if places and now_s - int(since) < keys.PLACES_WINDOW_S else 0
    return Scans(int(count), first_at, seen)


class _Redis(aioredis.Redis):
    """redis-py's client, which also closes the hot-read clients made on its address (see DocumentCache)."""

    hot_clients: list[RespClient]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        for client in self.hot_clients:
            await client.aclose()
        await super().aclose(close_connection_pool)


def redis_client(url: str) -> aioredis.Redis:
    """A client that gives up in time, so that a Redis that stopped answering falls back to Postgres.

    Its pool waits briefly for a free connection under a burst instead of failing at once (redis-py's default
    pool raises MaxConnectionsError, which dropped invalidations under gate load in bench/gate.py).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=keys.REDIS_MAX_CONNECTIONS,
        timeout=keys.REDIS_GIVE_UP_S,
        socket_timeout=keys.REDIS_GIVE_UP_S,
        socket_connect_timeout=keys.REDIS_TIMEOUT_S,
    )
    client = _Redis(connection_pool=pool)
    client.hot_clients = []
    client.auto_close_connection_pool = True  # the pool is the client's own: aclose() closes its connections too
    return client


def hot_client(client: aioredis.Redis) -> RespClient | None:
    """A RespClient to the database of `client`, closed with it; None where it cannot go (TLS and the like)."""
    pool = client.connection_pool
    if pool.connection_class not in (aioredis.Connection, aioredis.UnixDomainSocketConnection):
        return None
    options = pool.connection_kwargs
    hot = RespClient(
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        db=int(options.get("db", 0)),
        username=options.get("username"),
        password=options.get("password"),
        timeout_s=keys.REDIS_TIMEOUT_S,
        give_up_s=keys.REDIS_GIVE_UP_S,
    )
    if isinstance(client, _Redis):
        client.hot_clients.append(hot)
    return hot


def db_channel(prefix: str, client: aioredis.Redis) -> str:
    """`prefix` + the client's database number: pub/sub channels span a server's databases, the ids sent on them
    do not."""
    return prefix + str(client.connection_pool.connection_kwargs.get("db", 0))


async def follow_ids(
    client: aioredis.Redis,
    channel: str,
    on_id: Callable[[int], None],
    *,
    on_subscribed: Callable[[], None],
    on_lost: Callable[[], None],
) -> None:
    """Call `on_id` with every id published on `channel`, until cancelled. A lost subscription is taken up again
    after the back-off; messages published meanwhile cannot be replayed, so `on_lost` must make up for them
    (`on_subscribed` runs each time the subscription stands)."""
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                _raise_if_cancelled()
                on_subscribed()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        on_id(int(message["data"]))
        except REDIS_ERRORS as exc:
            logger.warning(
                "redis channel %s lost, subscribing again in %.0f s: %r", channel, keys.REDIS_RETRY_AFTER_S, exc
            )
        finally:
            on_lost()
        await asyncio.sleep(keys.REDIS_RETRY_AFTER_S)


def _raise_if_cancelled() -> None:
    """redis-py can swallow a cancellation that arrives while it connects (redis/redis-py#2028, #2551): the
    subscription then stands and listens for ever, and a worker's shut-down waits its whole bound for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Script:
    """A Lua script called by EVALSHA, loaded by EVAL when Redis does not know it (a restarted Redis)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, call: Callable[..., Awaitable[Any]], keys_: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await call("EVALSHA", self.sha, len(keys_), *keys_, *args)
        except ResponseError as exc:  # redis-py raises NoScriptError; cache.resp the reply as it is
            if not isinstance(exc, NoScriptError) and not str(exc).startswith("NOSCRIPT"):
                raise
        return await call("EVAL", self.source, len(keys_), *keys_, *args)


_ADD_SCANS_SCRIPT = _Script(_ADD_SCANS)
_REBUILD_SCANS_SCRIPT = _Script(_REBUILD_SCANS)


@functools.lru_cache(maxsize=65_536)
def place_id(place: str) -> str:
    """A short id of a client network, as kept among a code's places in Redis (a collision costs one place)."""
    return format(zlib.crc32(place.encode()), "x")


def _raise_error_reply(replies: list[Any]) -> list[Any]:
    """The replies of a RespClient.send of several commands, which returns error replies: raised here, the first."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


# The document of a code and its scan counters, in one round trip: GET the document (unless this worker has it),
# HGET the code's member and GET its pair's bitmap, packed here. Plain commands cost Redis about a third of a Lua
# script making the same calls (bench/PROFILE.md, "Redis-only path"), each touches one key (a Redis Cluster routes
# them), and the worker writes the fetches of one turn of its event loop together (cache.resp).
_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"


def _fetch_commands(doc_key: str | None, slot: keys.ScanSlot | None) -> bytes:
    """The commands of a fetch in RESP, as hiredis.pack_command would pack them one by one."""
    commands = b""
    if doc_key is not None:
        document = keys.document_key(doc_key).encode()
        commands = _GET % (len(document), document)
    if slot is not None:
        key, field, bits = slot.key.encode(), slot.field.encode(), slot.bits_key.encode()
        commands += _HGET % (len(key), key, len(field), field) + _GET % (len(bits), bits)
    return commands


class DocumentCache:
    """Documents and scan counters by code, in Redis."""

    __slots__ = ("_call", "_channel", "_hot", "_invalidate_batch", "_redis", "_skip_until", "errors", "hits", "misses")

    def __init__(self, client: aioredis.Redis, *, hot_read: bool = True) -> None:
        """`hot_read`: the scan path's read, the scan sync and the flush's reads go through a RespClient of its own
        (see cache.resp), not redis-py."""
        self._redis = client
        self._hot = hot_client(client) if hot_read else None
        # The scan sync and flush too: hiredis packs their thousands of arguments in C, redis-py in Python.
        self._call: Callable[..., Awaitable[Any]] = client.execute_command if self._hot is None else self._hot.call
        self._invalidate_batch = client.register_script(_INVALIDATE_BATCH)
        # Pub/sub channels span a server's databases; batch ids do not: one channel per database.
        self._channel = db_channel(keys.INVALIDATION_CHANNEL, client)
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"DocumentCache(hits={self.hits}, misses={self.misses}, errors={self.errors})"

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def fetch(self, doc_key: str | None, slot: keys.ScanSlot | None) -> Fetched | None:
        """The cached document of `doc_key` and the scan counters of `slot` (each unless None), in one round trip;
        None without Redis. The fetches of one turn of the event loop share that round trip; when it fails, each
        fails."""
        if not self.is_available:
            return None
        try:
            if self._hot is not None:
                count = (doc_key is not None) + 2 * (slot is not None)
                replies = _raise_error_reply(await self._hot.send(_fetch_commands(doc_key, slot), count))
            else:
                replies = await self._fetch_by_redis_py(doc_key, slot)
        except REDIS_ERRORS as exc:
            self._failed("fetch", exc)
            return None
        scans, scanned = None, None
        if slot is not None:
            member, scanned = replies[-2:]
            scans = unpack_scans(member, time.time()) if scanned is not None else None
        document = replies[0] if doc_key is not None else None
        if document is None:
            self.misses += doc_key is not None
            return Fetched(None, 0, 0, scans, scanned)
        self.hits += 1
        if document == keys.NEGATIVE:
            return Fetched(keys.NEGATIVE, 0, 0, scans, scanned)
        head, _, document = document.partition(b"\n")
        batch_id, _, version = head.partition(b" ")
        return Fetched(document, int(batch_id), int(version or 0), scans, scanned)

    async def _fetch_by_redis_py(self, doc_key: str | None, slot: keys.ScanSlot | None) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            if doc_key is not None:
                pipe.get(keys.document_key(doc_key))
            if slot is not None:
                pipe.hget(slot.key, slot.field)
                pipe.get(slot.bits_key)
            replies: list[Any] = await pipe.execute()
        return replies

    async def fill(self, doc_key: str, document: bytes, *, batch_id: int, version: int, ttl_s: int) -> None:
        """Cache `document` under `doc_key`, registered under its batch (whose changes drop it), with the batch's
        version it shows."""
        if not self.is_available:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # The batch id and version ride in front of the document: a worker's local tier indexes it for
                # invalidation, and no worker serves a copy older than the version it knows (resolver.scan.changes).
                pipe.set(keys.document_key(doc_key), b"%d %d\n%s" % (batch_id, version, document), ex=ttl_s)
                pipe.sadd(keys.batch_codes_key(batch_id), doc_key)
                pipe.expire(keys.batch_codes_key(batch_id), keys.SCANS_TTL_S)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed("fill", exc)

    async def put_negative(self, code: str) -> None:
        if not self.is_available:
            return
        try:
            await self._redis.set(keys.document_key(code), keys.NEGATIVE, ex=keys.NEGATIVE_TTL_S)
        except REDIS_ERRORS as exc:
            self._failed("set", exc)

    async def add_scans(
        self, states: list[ScanState], read: list[str] | None = None
    ) -> tuple[list[ScanState], dict[str, bytes | None], str]:
        """Add each code's pending scans to Redis (and its scans not yet in Postgres again, where the pair was rebuilt
        since) and refresh the states with the totals, one command per SYNC_CHUNK codes; answers the states whose scan
        pair was lost, which added nothing (`rebuild_scans`), the bitmaps named in `read` (None: lost), and Redis's
        generation (keys.REDIS_GENERATION: another one than before means Redis lost its data meanwhile).

        Raises on a Redis error, leaving the states of that chunk and the following ones pending for the next try,
        and skips Redis for a while like a failed read (see `is_available`).
        """
        try:
            return await self._add_scans(states, read or [])
        except REDIS_ERRORS as exc:
            self._failed("scan sync", exc)
            raise

    async def _add_scans(
        self, states: list[ScanState], read: list[str]
    ) -> tuple[list[ScanState], dict[str, bytes | None], str]:
        sent = sorted(((state, state.pending, list(state.pending_places)) for state in states), key=_pair_of)
        lost = []
        bitmaps: dict[str, bytes | None] = {}
        generation = ""
        for start in range(0, max(len(sent), 1), SYNC_CHUNK):
            chunk = sent[start : start + SYNC_CHUNK]
            reading = read if start == 0 else []
            now_s = int(time.time())
            names: list[str] = []
            pairs: list[list[tuple[ScanState, int, list[str]]]] = []
            args: list[Any] = [keys.SCANS_TTL_S, keys.PLACES_WINDOW_S, keys.MAX_PLACES, now_s, 0]
            for key, pair in itertools.groupby(chunk, key=_pair_of):
                scans = list(pair)
                pairs.append(scans)
                names += (key, scans[0][0].slot.bits_key)
                args.append(len(scans))
                for state, pending, places in scans:
                    mine = f"{pending} {state.first_at} {now_s} {','.join(map(place_id, places))}"
                    args += (state.slot.bit, state.epoch, state.unflushed, mine)
            args[4] = len(pairs)
            args.append(secrets.token_hex(8))
            answers = iter(await _ADD_SCANS_SCRIPT(self._call, [keys.REDIS_GENERATION, *names, *reading], args))
            for scans in pairs:
                pair_answers = [next(answers) for _ in scans]
                epoch = _text(next(answers))
                for (state, pending, places), answer in zip(scans, pair_answers, strict=True):
                    if answer == -1:
                        lost.append(state)
                        continue
                    added = pending + (state.unflushed if epoch != state.epoch else 0)
                    # Never lower than the worker's last figure: a rebuilt pair lacks the other workers' scans
                    # until they have added them again.
                    if answer is None:  # its first scans in this pair: the member is this worker's
                        state.count, state.places = max(state.count + pending, added), len(places)
                    else:  # includes the scans just sent and every other worker's
                        merged = unpack_scans(answer, now_s)
                        state.count = max(state.count + pending, merged.count)
                        state.first_at, state.places = merged.first_at, merged.places
                    state.epoch, state.synced_at = epoch, time.monotonic()
                    state.pending -= pending  # scans that arrived during the round trip stay pending
                    state.unflushed += pending
                    state.pending_places.difference_update(places)
            *read_back, last = answers
            bitmaps.update(zip(reading, read_back, strict=True))
            generation = _text(last)
        return lost, bitmaps, generation

    async def rebuild_scans(
        self, members: dict[str, tuple[bytes, list[tuple[str, Scans]]]], asked: list[keys.ScanSlot]
    ) -> tuple[dict[keys.ScanSlot, Scans], dict[str, bytes]]:
        """Make each lost scan pair of `asked` whole again from `members` (by hash: its bitmap and every code of it
        Postgres has counted), unless another worker did meanwhile; answers the counters of `asked` as they then
        stand, and the pairs' bitmaps. Raises on a Redis error (and skips Redis for a while)."""
        by_key: dict[str, list[keys.ScanSlot]] = {}
        for slot in asked:
            by_key.setdefault(slot.key, []).append(slot)
        names: list[str] = []
        args: list[Any] = [keys.SCANS_TTL_S, REBUILD_MEMBERS_PER_HSET, secrets.token_hex(4)]
        for key, slots in by_key.items():
            bits, rows = members.get(key, (b"", []))
            names += (key, slots[0].bits_key)
            args += (bits, len(rows))
            for field, counted in rows:
                args += (field, f"{counted.count} {counted.first_at} 0 ")
            args += (len(slots), *(slot.field for slot in slots))
        try:
            answers = await _REBUILD_SCANS_SCRIPT(self._call, names, args)
        except REDIS_ERRORS as exc:
            self._failed("scan rebuild", exc)
            raise
        now_s = time.time()
        scans: dict[keys.ScanSlot, Scans] = {}
        bitmaps: dict[str, bytes] = {}
        at = 0
        for slots in by_key.values():
            for slot in slots:
                scans[slot] = unpack_scans(answers[at] or None, now_s)
                at += 1
            bitmaps[slots[0].bits_key] = answers[at] or b""
            at += 1
        return scans, bitmaps

    async def add_bad_lookups(self, counts: dict[str, int], *, window_s: int) -> dict[str, int]:
        """Add each client's bad lookups to its count of the current window (made, with its expiry, by the first
        count of a window) and answer the totals of all workers; raises on a Redis error (and skips Redis a while).
        Plain commands, one key each, one round trip."""
        commands = [
            command
            for client, count in counts.items()
            for command in (
                ("SET", keys.bad_lookups_key(client), 0, "EX", window_s, "NX"),
                ("INCRBY", keys.bad_lookups_key(client), count),
            )
        ]
        try:
            if self._hot is not None:
                replies = _raise_error_reply(await self._hot.send(b"".join(map(pack, commands)), len(commands)))
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed("bad lookups", exc)
            raise
        return {client: int(total) for client, total in zip(counts, replies[1::2], strict=True)}

    async def invalidate_batch(self, batch_id: int, *, always_publish: bool = True) -> int:
        """Drop every cached document of the batch in Redis and tell every worker's local tier (only when Redis
        held some, unless `always_publish`); raises on a Redis error, since the caller changed data and must know."""
        prefix = keys.document_key("")[: -len("{}")]
        dropped = await self._invalidate_batch(
            keys=[keys.batch_codes_key(batch_id)], args=[prefix, self._channel, batch_id, int(always_publish)]
        )
        return int(dropped)

    async def listen_for_invalidations(self, tier: LocalTier) -> None:
        """Drop the local documents of every batch announced as changed. The tier is on only while subscribed:
        a message missed while the connection is down would leave a stale document."""

        def subscribed() -> None:
            tier.is_enabled = True
            logger.info("local document tier on: subscribed to invalidations")

        await follow_ids(self._redis, self._channel, tier.drop_batch, on_subscribed=subscribed, on_lost=tier.disable)

    async def forget(self, codes: list[str]) -> None:
        """Drop the entries of `codes` where Redis can be reached; a stale negative entry expires on its own."""
        try:
            await self._redis.delete(*(keys.document_key(code) for code in codes))
        except REDIS_ERRORS as exc:
            self._failed("delete", exc)

    async def ping(self) -> bool:
        """Whether Redis answers; when it does, the skipping after a failure ends (the health check and the scan
        sync, which pings while Redis is skipped, bring it back within a moment of its return)."""
        try:
            await self._redis.ping()
        except REDIS_ERRORS as exc:
            self._failed("ping", exc)
            return False
        if not self.is_available:
            logger.info("redis answers again")
        self._skip_until = 0.0
        return True

    def _failed(self, operation: str, exc: BaseException) -> None:
        """Skip Redis for a while; logged once per outage (failures while skipping are only counted)."""
        self.errors += 1
        if self.is_available:
            logger.warning("redis %s failed, serving from postgres: %r", operation, exc)
        self._skip_until = time.monotonic() + keys.REDIS_RETRY_AFTER_S
