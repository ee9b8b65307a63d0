"""What consumers scan on a market day: the codes of the first-scan and mixed phases, in the order asked.

Consumers scan package labels, nearly always the first scan of that label: one package, one buyer.

    first-scan   the package codes of FIRST_SCAN_BATCHES batches, one of each batch in turn (a market's stalls
                 sell many batches at once), each batch's in the order they were printed; each asked once
    mixed        each request, with probability MIXED_BATCH_SHARE, the code of a batch drawn by Zipf
                 (exponent MIXED_ZIPF_S) over MIXED_BATCHES batches, else the next never-scanned package code
                 of a batch drawn the same way

The mixed draws are made first, from a fixed seed, so that each batch is seeded with the package codes
its draws need (at least MIXED_MIN_LABELS, a print run nobody happened to scan) and the same run asks
the same codes in the same order every time. The paths are walked once, warm-up first (resolve.py
FreshCodes), so a package code is never asked twice while the budget lasts.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dataset import SeededBatch

FIRST_SCAN_BATCHES = 100
MIXED_BATCHES = 1_000
MIXED_ZIPF_S = 1.1  # over 1,000 batches: the first draws 18 % of the requests, the first 10 48 %, the first 100 77 %
MIXED_BATCH_SHARE = 0.5  # requests that ask a batch code; the rest ask a package code
MIXED_MIN_LABELS = 100  # package codes of a batch whose draws need fewer (or none)
MIXED_SEED = 20_261_212  # the draws are the same in every run


def first_scan_label_runs(codes: int, batches: int = FIRST_SCAN_BATCHES) -> list[int]:
    """Package codes of each of `batches` batches, `codes` in all (rounded up to a multiple of `batches`)."""
    return [-(-codes // batches)] * batches


def first_scan_codes(batches: Sequence[SeededBatch]) -> list[str]:
    """The package codes of `batches` one of each batch in turn, each batch's in sequence order."""
    turns = itertools.zip_longest(*(batch.package_codes for batch in batches))
    return [code for turn in turns for code in turn if code is not None]


def zipf_weights(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n under Zipf with exponent `s`, for random.choices(cum_weights=...)."""
    return list(itertools.accumulate(1.0 / rank**s for rank in range(1, n + 1)))


@dataclass(frozen=True, slots=True)
class MixedDraws:
    """For each request of the mixed phase, the batch it concerns (its popularity rank, 0 the most popular) and
    whether it asks the batch code (True) or the batch's next never-scanned package code (False)."""

    batch_of: list[int]
    is_batch_code: list[bool]

    @classmethod
    def make(
        cls,
        requests: int,
        *,
        batches: int = MIXED_BATCHES,
        zipf_s: float = MIXED_ZIPF_S,
        batch_share: float = MIXED_BATCH_SHARE,
        seed: int = MIXED_SEED,
    ) -> MixedDraws:
        rng = random.Random(seed)
        batch_of = rng.choices(range(batches), cum_weights=zipf_weights(batches, zipf_s), k=requests)
        return cls(batch_of, [rng.random() < batch_share for _ in range(requests)])

    def __len__(self) -> int:
        return len(self.batch_of)

    def label_runs(self, batches: int = MIXED_BATCHES, minimum: int = MIXED_MIN_LABELS) -> list[int]:
        """Package codes to issue for each batch: what its draws ask, at least `minimum`."""
        needed = [0] * batches
        for batch, is_batch_code in zip(self.batch_of, self.is_batch_code, strict=True):
            needed[batch] += not is_batch_code
        return [max(minimum, n) for n in needed]

    def codes(self, batches: Sequence[SeededBatch]) -> list[str]:
        """The code each request asks, `batches` in rank order (seeded with at least `label_runs()` codes)."""
        next_package = [0] * len(batches)
        codes = []
        for rank, is_batch_code in zip(self.batch_of, self.is_batch_code, strict=True):
            batch = batches[rank]
            if is_batch_code:
                codes.append(batch.trace_code)
            else:
                codes.append(batch.package_codes[next_package[rank]])
                next_package[rank] += 1
        return codes
