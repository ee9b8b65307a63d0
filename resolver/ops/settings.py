"""Settings from the environment, read once into one object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_CODE_PARTITIONS = 16
DEFAULT_LOCAL_CACHE_SIZE = 20_000  # documents per worker in the in-process tier; 0 turns the tier off
DEFAULT_BAD_LOOKUP_LIMIT = 30  # malformed or unknown lookups per client and minute before it is refused; 0: none
DEV_SECRET = "tracecode-development-secret-do-not-use-in-production"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment.

    `database_url` and `redis_url` are None when unset: the service then starts embedded servers.
    """

    database_url: str | None = None
    redis_url: str | None = None
    secret: bytes = DEV_SECRET.encode()
    admin_token: str | None = None
    data_dir: Path = Path(".data")
    public_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    code_partitions: int = DEFAULT_CODE_PARTITIONS
    local_cache_size: int = DEFAULT_LOCAL_CACHE_SIZE
    bad_lookup_limit: int = DEFAULT_BAD_LOOKUP_LIMIT
    is_dev_secret: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secret = env.get("TRACECODE_SECRET") or None
        if secret is not None and len(secret) < 16:
            raise SettingsError("TRACECODE_SECRET must be at least 16 characters long")
        partitions_text = env.get("TRACECODE_CODE_PARTITIONS", str(DEFAULT_CODE_PARTITIONS))
        try:
            partitions = int(partitions_text)
        except ValueError:
            raise SettingsError(f"TRACECODE_CODE_PARTITIONS must be an integer, got {partitions_text!r}") from None
        if not 1 <= partitions <= 1024:
            raise SettingsError(f"TRACECODE_CODE_PARTITIONS must be between 1 and 1024, got {partitions}")
        local_text = env.get("TRACECODE_LOCAL_CACHE", str(DEFAULT_LOCAL_CACHE_SIZE))
        if not local_text.isdigit():
            raise SettingsError(f"TRACECODE_LOCAL_CACHE must be a number of documents (0: off), got {local_text!r}")
        limit_text = env.get("TRACECODE_BAD_LOOKUP_LIMIT", str(DEFAULT_BAD_LOOKUP_LIMIT))
        if not limit_text.isdigit():
            raise SettingsError(
                f"TRACECODE_BAD_LOOKUP_LIMIT must be a number of lookups (0: no limit), got {limit_text!r}"
            )
        public_url = (env.get("TRACECODE_PUBLIC_URL") or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise SettingsError(f"TRACECODE_PUBLIC_URL must start with http:// or https://, got {public_url!r}")
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            secret=(secret or DEV_SECRET).encode(),
            admin_token=env.get("TRACECODE_ADMIN_TOKEN") or None,
            data_dir=Path(env.get("TRACECODE_DATA_DIR") or ".data").resolve(),
            public_url=public_url,
            code_partitions=partitions,
            local_cache_size=int(local_text),
            bad_lookup_limit=int(limit_text),
            is_dev_secret=secret is None,
        )
