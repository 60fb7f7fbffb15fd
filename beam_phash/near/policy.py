"""The keep rule and the measured thresholds of near-duplicate dedup.

Keeping. Images are ranked by the ``keep`` policy; in rank order an image is kept unless an
already kept image lies within ``k`` bits, in which case it is dropped as a duplicate of the
nearest such image (ties: the better ranked). So no two kept images are within ``k`` bits, every
dropped image names a kept image within ``k`` bits (never a chain), and the result depends only
on the set of inputs, not on their order, the runner or its parallelism.

A rank is (primary, owner, hash): ``primary`` is a uint64 (fewer is better), the owner is the
record id compared as a string, the hash bytes break what ties remain.
"""
from __future__ import annotations

#: keep= policies: which image of a near-duplicate group is kept.
KEEP_POLICIES = ("largest", "smallest_id")

#: max_distance="auto": per (algorithm, hash_size), the threshold picked from
#: benchmarks/eval_near_dup.py on 85 real photos and 12 edits each (table in the README), for
#: hash version 14 (whose hashes of every JPEG that decodes cleanly are version 10's but for
#: dHash and pHash over size 16; phash 8 and 16: measured on version 9, whose hashes of them
#: version 10 left as they were; phash 32: version 13; dhash 16: version 14; double_gradient:
#: version 7): the smallest k that catches the mild edits (recall >= 0.99) with no distinct
#: photos merged, rounded up a little, far below the closest distinct pair (phash 16: 8 needed,
#: 10 on 400 web crops and 12 on 1200, none merged up to 76; phash 32: 80 needed, not rounded up
#: (its mild recall there is 0.991), 72 on 400 web
#: crops, none merged up to 435; dhash
#: 16: 9 needed, 9 on 400 web crops, none merged up to 28 with dihedral variants, 12 on the
#: crops, whose overlapping cuts of one photo count as distinct; double_gradient 16, 144 bits: 4
#: needed, 5 on 400 web crops, none merged up to 18 with dihedral variants). phash 8: 4 needed,
#: none merged up to 8 with dihedral variants; kept at 4: a 64-bit ball of radius 6 holds over a
#: hundred times the hashes of one of radius 4.
RECOMMENDED_MAX_DISTANCE = {("phash", 8): 4, ("phash", 16): 16, ("phash", 32): 80, ("dhash", 16): 12,
                            ("double_gradient", 16): 8}

_U64_MAX = (1 << 64) - 1


def recommended_max_distance(algorithm: str, hash_size: int) -> int:
    """The measured default threshold for ``algorithm`` at ``hash_size`` (ValueError if none)."""
    try:
        return RECOMMENDED_MAX_DISTANCE[(algorithm, hash_size)]
    except KeyError:
        known = ", ".join(f"{a} {n}" for a, n in RECOMMENDED_MAX_DISTANCE)
        raise ValueError(f"no measured max_distance for {algorithm} at hash_size {hash_size} "
                         f"(measured: {known}); give a number") from None


def check_keep(policy: str) -> str:
    if policy not in KEEP_POLICIES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_POLICIES)}, got {policy!r}")
    return policy


def primary_rank(policy: str, pixels: int) -> int:
    """The uint64 first part of a rank: "largest" prefers more pixels (then the smaller id);
    "smallest_id" ranks by id alone."""
    return _U64_MAX - pixels if policy == "largest" else 0
