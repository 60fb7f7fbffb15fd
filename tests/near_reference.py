"""The earlier pure-Python near-duplicate implementation, kept as a test oracle for the Rust
kernels (rust_ext/src/near): bands, candidate verification and the keep rule.

Multi-index hashing. A ``bits``-bit hash is cut into ``k + 1`` contiguous bands. Two hashes within
``k`` bits differ in at most ``k`` bands, so by the pigeonhole principle they agree exactly on at
least one: grouping by (band index, band value) finds every pair within ``k`` (exact recall), and
each candidate pair is then verified by popcount.

With ``dihedral`` each image also carries the hashes of its 8 rotations and mirror images. The
distance of two images is then the smallest distance between one's identity hash and any variant
of the other (both ways), and every variant contributes its bands, so the guarantee still holds.

Keeping. Images are ranked by the ``keep`` policy; in rank order an image is kept unless an
already kept image lies within ``k`` bits, in which case it is dropped as a duplicate of the
nearest such image (ties: the better ranked). So no two kept images are within ``k`` bits, every
dropped image names a kept image within ``k`` bits (never a chain), and the result depends only
on the set of inputs, not on their order, the runner or its parallelism.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

class Node(NamedTuple):
    """One distinct image in the near-duplicate graph."""

    key: str  # node_key(): the record id and a digest of the hashes
    rank: tuple  # smaller is preferred by the keep policy
    hash: bytes
    variants: Tuple[bytes, ...] = ()  # the 8 dihedral hashes, or () without dihedral


class Edge(NamedTuple):
    """Two images within k bits; ``a`` is the better ranked."""

    a: str
    a_rank: tuple
    b: str
    b_rank: tuple
    distance: int


def node_key(owner: str, hash_: bytes, variants: Tuple[bytes, ...] = ()) -> str:
    """A graph node's key: the record id (or id-less surrogate) and a digest of its hashes, so
    that two different images under one id stay two nodes."""
    digest = hashlib.blake2b(hash_ + b"".join(variants), digest_size=12).hexdigest()
    return f"{owner}\x00{digest}"


def owner_of(key: str) -> str:
    """The record id a node key was made from."""
    return key.rsplit("\x00", 1)[0]


def rank_of(policy: str, pixels: int, key: str) -> tuple:
    """The sort key of an image under ``policy``: "largest" prefers more pixels, then the smaller
    id; "smallest_id" prefers the smaller id. Ties (one id, two images) go by the hash digest, so
    the order is total."""
    if policy == "largest":
        return (-pixels, key)
    return (key,)


def band_edges(bits: int, k: int) -> List[Tuple[int, int]]:
    """The k+1 contiguous bit ranges [start, stop) that cover ``bits`` bits, sizes differing by
    at most one."""
    if not 0 <= k < bits:
        raise ValueError(f"max_distance must be between 0 and {bits - 1} for {bits}-bit hashes, got {k}")
    n = k + 1
    bounds = [bits * i // n for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def band_keys(node: Node, bands: Sequence[Tuple[int, int]]) -> Set[bytes]:
    """A key per band of the node's identity hash and of each variant: the band's index and its
    bits, as bytes (a deterministic key for Beam's GroupByKey)."""
    keys = set()
    for h in node.variants or (node.hash,):
        # Bit i of a hash is bit i % 8 of byte i // 8, the padding (if any) above the last real
        # bit: read little-endian, bit i is bit i of the integer.
        value = int.from_bytes(h, "little")
        for i, (start, stop) in enumerate(bands):
            band = (value >> start) & ((1 << (stop - start)) - 1)
            keys.add(i.to_bytes(2, "big") + band.to_bytes((stop - start + 7) // 8, "big"))
    return keys


def _words(hashes: Sequence[bytes]) -> np.ndarray:
    """Hashes as rows of uint8 (popcount of a xor is the Hamming distance)."""
    return np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), -1)


def _distances_from(i: int, ident: np.ndarray, variants: Optional[np.ndarray], js: np.ndarray) -> np.ndarray:
    """Distances of node i to the nodes ``js``: identity against identity, or with variants the
    minimum over i's variants against j's identity and i's identity against j's variants."""
    if variants is None:
        return np.bitwise_count(ident[js] ^ ident[i]).sum(axis=1, dtype=np.int64)
    mine = np.bitwise_count(variants[i][None, :, :] ^ ident[js][:, None, :]).sum(axis=2, dtype=np.int64)
    theirs = np.bitwise_count(variants[js] ^ ident[i][None, None, :]).sum(axis=2, dtype=np.int64)
    return np.minimum(mine.min(axis=1), theirs.min(axis=1))


def distance(a: Node, b: Node) -> int:
    """The (dihedral, when the nodes carry variants) Hamming distance of two images."""
    nodes = [a, b]
    ident = _words([n.hash for n in nodes])
    variants = None
    if a.variants and b.variants:
        variants = _words([v for n in nodes for v in n.variants]).reshape(2, 8, -1)
    return int(_distances_from(0, ident, variants, np.array([1]))[0])


def verify_group(nodes: List[Node], k: int, max_group: int, window: int) -> Tuple[List[Edge], bool]:
    """The pairs of a band group within ``k`` bits, and whether the group was over ``max_group``.

    Up to ``max_group`` members every pair is checked. Beyond it (blank or near-uniform images
    share bands en masse) the members are sorted by hash and each is checked against its
    ``window`` successors only: bounded work, but pairs further apart in that order are missed
    unless another band finds them."""
    nodes = sorted(set(nodes), key=lambda n: (n.hash, n.rank))
    n = len(nodes)
    if n < 2:
        return [], False
    ident = _words([x.hash for x in nodes])
    variants = None
    if all(x.variants for x in nodes):
        variants = _words([v for x in nodes for v in x.variants]).reshape(n, 8, -1)
    overflow = n > max_group
    reach = window if overflow else n
    edges = []
    for i in range(n - 1):
        js = np.arange(i + 1, min(n, i + 1 + reach))
        d = _distances_from(i, ident, variants, js)
        for j in js[d <= k]:
            a, b = nodes[i], nodes[int(j)]
            if b.rank < a.rank:
                a, b = b, a
            edges.append(Edge(a.key, a.rank, b.key, b.rank, int(d[j - i - 1])))
    return edges, overflow


def resolve(edges: Iterable[Edge]) -> Dict[str, Tuple[str, int]]:
    """Greedy by rank over the near-duplicate graph: {dropped node: (kept node, distance)}.
    Nodes without an edge are kept and not listed."""
    rank: Dict[str, tuple] = {}
    better: Dict[str, Dict[str, int]] = {}  # node -> {better ranked neighbour: distance}
    for e in edges:
        rank[e.a], rank[e.b] = e.a_rank, e.b_rank
        better.setdefault(e.b, {})[e.a] = e.distance
    kept: Set[str] = set()
    dropped: Dict[str, Tuple[str, int]] = {}
    for node in sorted(rank, key=rank.__getitem__):
        near = [(d, rank[o], o) for o, d in better.get(node, {}).items() if o in kept]
        if near:
            d, _, keeper = min(near)
            dropped[node] = (keeper, d)
        else:
            kept.add(node)
    return dropped
