"""Near-duplicate dedup's configuration, frozen and validated on construction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from beam_phash import checks
from beam_phash.checks import int_in
from beam_phash.near.policy import check_keep


@dataclass(frozen=True)
class NearConfig:
    """See ``ImagePhashDedup`` for each argument. ``max_distance``: k >= 0 bits, or ``"auto"``
    (the measured threshold for the hashes' algorithm and size, resolved by ``NearDedup``);
    its upper bound, the bit count, is checked there too."""

    max_distance: Union[int, str] = "auto"
    keep: str = "largest"
    partitions: int = 16
    band_partition_bits: int = 0
    search_partitions: int = 4
    expected_count: Optional[int] = None
    state_dir: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.max_distance, str) and self.max_distance != "auto":
            raise ValueError(f"max_distance must be an int or 'auto', got {self.max_distance!r}")
        if self.max_distance != "auto":
            int_in("max_distance", self.max_distance, 0)
        check_keep(self.keep)
        int_in("partitions", self.partitions, 1, 1 << 20)
        int_in("band_partition_bits", self.band_partition_bits, 0, 16)
        int_in("search_partitions", self.search_partitions, 1, 4096)
        if self.expected_count is not None:
            int_in("expected_count", self.expected_count, 1)
        if self.state_dir is not None:
            checks.state_dir(self.state_dir)
