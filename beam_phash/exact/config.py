"""The two backends of exact dedup, as frozen configurations that validate themselves."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from beam_phash import checks
from beam_phash.checks import int_in, text

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: The most buckets a Ray backend routes to.
MAX_BUCKETS = 65536
#: The most records in one round of bucket-actor calls.
MAX_CLAIM_BATCH = 1_000_000


@dataclass(frozen=True)
class RayBackend:
    """Ray bucket actors hold "hash -> first claimant" (see ``ImagePhashDedup`` for each argument).

    ``num_buckets`` buckets, hashes routed by their own bits, hosted by ``num_actors`` actor
    processes (None: one per CPU of the cluster, at most ``num_buckets``); ``ray_address``: None (this process's
    Ray, or an embedded one on 127.0.0.1), ``"auto"`` or ``"host:port"``; ``backend_name``: a
    backend that outlives the pipeline; ``state_dir``: the seen-set on disk, surviving actor
    faults and carried to later runs; ``claim_batch`` records per round of actor calls;
    ``max_in_flight`` concurrent actor calls per worker."""

    num_buckets: int = 16
    num_actors: Optional[int] = None
    ray_address: Optional[str] = None
    backend_name: Optional[str] = None
    state_dir: Optional[str] = None
    claim_batch: int = 1024
    max_in_flight: int = 16

    def __post_init__(self):
        self.check_numbers(self.num_buckets, self.claim_batch, self.max_in_flight)
        if self.num_actors is not None:
            int_in("num_actors", self.num_actors, 1, self.num_buckets)
        if self.ray_address is not None:
            text("ray_address", self.ray_address)
        name = self.backend_name
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
            raise ValueError("backend_name must be 1-100 characters of letters, digits, '_', '.', '-', "
                             f"starting with a letter or digit; got {name!r}")
        if self.state_dir is not None:
            checks.state_dir(self.state_dir)

    @staticmethod
    def check_numbers(num_buckets: int, claim_batch: int, max_in_flight: int) -> None:
        """The backend's numbers, checked whether or not a Ray backend runs (as every argument is)."""
        int_in("num_buckets", num_buckets, 1, MAX_BUCKETS)
        int_in("claim_batch", claim_batch, 1, MAX_CLAIM_BATCH)
        int_in("max_in_flight", max_in_flight, 1)


@dataclass(frozen=True)
class StateBackend:
    """Beam state keeps the first claimant of each hash: no server, any runner with state."""
