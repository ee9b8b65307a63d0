"""Every Redis key name and TTL of tracecode, in one place.

The keys of one code share the hash tag `{code}`, so that one script may touch them all on a
Redis Cluster too. A package code (type 4) has no key of its own: its document is its batch's, and
its scan counters are a field of the hash of its block of sequence numbers (`ScanSlot`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

KEY_PREFIX = "tc:"

DOCUMENT_TTL_S = 3_600  # 1 hour: documents are also invalidated on every write that changes them
NEGATIVE_TTL_S = 60  # a never-issued code stays unknown for a minute: a new code is not hidden long
NEGATIVE = b"-"  # cached answer "never issued"; a document is JSON and never starts with "-"
SCANS_TTL_S = 2 * DOCUMENT_TTL_S  # a scan hash untouched this long goes; it is rebuilt from Postgres when next needed
PLACES_WINDOW_S = 600  # 10 minutes: the window in which distinct places scanning one code are counted
PLACES_WARNING = 5  # this many distinct client networks in one window flag the code as possibly copied
MAX_PLACES = 16  # distinct networks kept per code and window: enough to pass the warning line
PACKAGE_SCAN_BLOCK = 4_096  # package codes (by sequence number) whose counters share one hash: a 512 B bitmap
# A worker answers the first scan of a code whose bit its copy of the block's bitmap (read this recently) has
# clear, as the code's first scan ever, without asking Redis: it misses only other workers' scans of that code
# since the copy was read (the copies of blocks in use are read again at every scan sync).
SCANNED_BITS_FRESH_S = 0.5

REDIS_MAX_CONNECTIONS = 64  # per worker
# A slow Redis must not hold up a scan, but a busy worker must not mistake its own slowness for Redis's: the hot
# read gives up when Redis has been silent this long with a request waiting (cache.resp), not merely when a
# request has waited this long on the wall clock (a saturated event loop reads replies late).
REDIS_TIMEOUT_S = 0.25
REDIS_GIVE_UP_S = 1.0  # any request is failed after this, Redis silent or not; redis-py's socket timeout too
REDIS_RETRY_AFTER_S = 2.0  # after a Redis error, go straight to Postgres for this long
INVALIDATION_CHANNEL = KEY_PREFIX + "invalidations:"  # + Redis db number -> batch ids whose documents changed
SCAN_SYNC_INTERVAL_S = 0.25  # how often a worker adds its scans to Redis's counters
REINVALIDATE_AFTER_S = 1.0  # a second invalidation catches a load that read Postgres before the change


REDIS_GENERATION = f"{KEY_PREFIX}generation"  # a token made when missing: a new one means Redis lost its data


def document_key(code: str) -> str:
    """document key (a code; a package code's is its batch code) -> b"{batch id} {version}\n" + the JSON document
    without its code's members, or NEGATIVE."""
    return f"{KEY_PREFIX}doc:{{{code}}}"


@dataclass(frozen=True, slots=True)
class ScanSlot:
    """Where a code's consumer scan counters live: member `field` of the hash `key`, and bit `bit` of the bitmap
    `bits_key`, in Redis; and in Postgres, the row of `package_scans` (region, seq) for a package code, else of
    `scan_counts` (code).

    A scan hash has a member per scanned code: "{count} {first_at} {window start} {places}", the count, the first
    scan's time (ISO 8601, China time), the start (epoch s) of the current PLACES_WINDOW_S and the ids of the
    client networks seen in it, comma-separated. Its bitmap has a bit set per member. The pair is made whole
    from Postgres (every code of it ever scanned) when the bitmap is missing, and only then is the bitmap made:
    while it exists, a code whose bit is clear has never been scanned. A package code shares the pair with the
    other codes of its block of PACKAGE_SCAN_BLOCK sequence numbers; any other code has a pair of its own.
    """

    code: str
    key: str
    field: str
    bits_key: str
    bit: int
    region: str = ""  # package codes only
    seq: int = -1  # package codes only

    @property
    def is_package(self) -> bool:
        return self.seq >= 0


def code_scan_slot(code: str) -> ScanSlot:
    """The counters of a batch, voucher or circulation code, or a long form: a pair of its own (a member's name
    is its bit's number)."""
    return ScanSlot(code, f"{KEY_PREFIX}scans:{{{code}}}", "0", f"{KEY_PREFIX}scanned:{{{code}}}", 0)


def package_scan_slot(code: str, region: str, seq: int) -> ScanSlot:
    """The counters of a package code, sequence number `seq` of `region`: in its block's pair."""
    block, offset = divmod(seq, PACKAGE_SCAN_BLOCK)
    key, bits_key = _package_pair(region, block)
    return ScanSlot(code, key, str(offset), bits_key, offset, region, seq)


@functools.lru_cache(maxsize=4_096)
def _package_pair(region: str, block: int) -> tuple[str, str]:
    """The keys of a block's pair, made once for all its codes' slots."""
    tag = f"{{{region}:{block}}}"
    return f"{KEY_PREFIX}pscans:{tag}", f"{KEY_PREFIX}pscanned:{tag}"


def bad_lookups_key(client: str) -> str:
    """client (an IPv4 address or IPv6 /64) -> its malformed and never-issued lookups in the current window
    (resolver.scan.ratelimit), on all workers."""
    return f"{KEY_PREFIX}bad:{{{client}}}"


def batch_codes_key(batch_id: int) -> str:
    """batch -> set of its codes whose documents are cached, so that a change drops them all."""
    return f"{KEY_PREFIX}batch:{batch_id}:codes"
