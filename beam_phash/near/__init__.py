"""Near-duplicate dedup on Beam shuffles, over packed batches and the Rust kernels.

``transform.NearDedup`` is the PTransform; ``policy`` holds the keep rule and the measured
thresholds; ``batches`` the packed value types that cross the shuffles; ``dofns`` the stages.
"""
from beam_phash.near.policy import KEEP_POLICIES, RECOMMENDED_MAX_DISTANCE, recommended_max_distance

__all__ = ["KEEP_POLICIES", "RECOMMENDED_MAX_DISTANCE", "recommended_max_distance"]
