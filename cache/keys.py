"""Every Redis key name and TTL of tracecode, in one place.

The keys of one code share the hash tag `{code}`, so that one script may touch them all on a
Redis Cluster too.
"""

from __future__ import annotations

KEY_PREFIX = "tc:"

DOCUMENT_TTL_S = 3_600  # 1 hour: documents are also invalidated on every write that changes them
NEGATIVE_TTL_S = 60  # a never-issued code stays unknown for a minute: a new code is not hidden long
NEGATIVE = b"-"  # cached answer "never issued"; a document is JSON and never starts with "-"
SCANS_TTL_S = 2 * DOCUMENT_TTL_S  # scan counters outlive the document they count, refreshed on every scan
PLACES_WINDOW_S = 600  # 10 minutes: the window in which distinct places scanning one code are counted
PLACES_WARNING = 5  # this many distinct client networks in one window flag the code as possibly copied

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


def document_key(code: str) -> str:
    """code -> b"{batch id}\n" + the resolved JSON document without its scan statistics, or NEGATIVE."""
    return f"{KEY_PREFIX}doc:{{{code}}}"


def scans_key(code: str) -> str:
    """code -> hash {count, first_at}: consumer resolves of the code."""
    return f"{KEY_PREFIX}scans:{{{code}}}"


def places_key(code: str) -> str:
    """code -> HyperLogLog of the client networks that scanned it in the current window."""
    return f"{KEY_PREFIX}places:{{{code}}}"


def batch_codes_key(batch_id: int) -> str:
    """batch -> set of its codes whose documents are cached, so that a change drops them all."""
    return f"{KEY_PREFIX}batch:{batch_id}:codes"
