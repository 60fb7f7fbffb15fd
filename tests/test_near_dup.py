"""Near-duplicate dedup against a brute-force oracle (all pairs, greedy by rank): the same kept
set in any input order, in-process and multi-process, with and without dihedral variants, from
images and from hex hashes (``hash_column``), partitioned or not; the Rust kernels against the
earlier Python implementation (tests/near_reference.py) and brute force."""
import io
import random

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image, ImageEnhance

import numpy as np

import beam_phash
import near_reference as reference
from beam_phash import METRICS_NAMESPACE, ImagePhashDedup, _native
from beam_phash.near.dofns import sub_blocks
from conftest import PHOTOS
from tagged import tagged

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _jpeg(img, quality=90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_near_dup_records(seed: int) -> list:
    """Each photo with edited copies (smaller, recompressed, brighter, mirrored, rotated), an
    exact byte copy under another id, bad records; shuffled."""
    records = []
    for p in PHOTOS:
        data = p.read_bytes()
        img = Image.open(io.BytesIO(data))
        records += [
            {"id": p.stem, "image": data},
            {"id": f"{p.stem}~copy", "image": data},
            {"id": f"{p.stem}~half", "image": _jpeg(img.resize((img.width // 2, img.height // 2)), 70)},
            {"id": f"{p.stem}~bright", "image": _jpeg(ImageEnhance.Brightness(img.convert("RGB")).enhance(1.15))},
            {"id": f"{p.stem}~flip", "image": _jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))},
            {"id": f"{p.stem}~rot", "image": _jpeg(img.transpose(Image.Transpose.ROTATE_90))},
        ]
    records += [{"id": "bad-garbage", "image": b"not an image"}, {"id": "bad-missing"}]
    random.Random(seed).shuffle(records)
    return records


def oracle(records, k, dihedral, keep="largest"):
    """All pairs, by brute force: {id: None (kept) or (keeper id, distance)}, plus failed ids."""
    infos, failed = {}, set()
    for r in records:
        try:
            h = beam_phash.hash_image(r.get("image") or b"", dihedral=dihedral)
        except beam_phash.ImageDecodeError:
            failed.add(r["id"])
            continue
        infos[r["id"]] = h
    def dist(a, b):
        if not dihedral:
            return a - b
        return min(min(v - b for v in a.variants), min(a - v for v in b.variants))
    def rank(i):
        h = infos[i]
        return (-h.width * h.height, i) if keep == "largest" else (i,)
    decided = {}
    kept = []
    for i in sorted(infos, key=rank):
        near = sorted((dist(infos[i], infos[j]), rank(j), j) for j in kept if dist(infos[i], infos[j]) <= k)
        if near:
            decided[i] = (near[0][2], near[0][0])
        else:
            decided[i] = None
            kept.append(i)
    return decided, failed


def check_against_oracle(records, k, dihedral, keep="largest"):
    expected, failed = oracle(records, k, dihedral, keep)

    def _check(tagged_records):
        got = {}
        for tag, r in tagged_records:
            assert r["id"] not in got, f"{r['id']} emitted twice"
            if tag == "kept":
                got[r["id"]] = None
            elif tag == "duplicates":
                got[r["id"]] = (r["duplicate_of"], r["distance"])
            else:
                assert r["error"], r
                got[r["id"]] = "failed"
        assert {i for i, v in got.items() if v == "failed"} == failed
        assert {i: v for i, v in got.items() if v != "failed"} == expected
    return _check


def run(records, k, dihedral=False, options=(), **kwargs):
    p = TestPipeline(options=PipelineOptions(list(options)))
    outputs = (p | beam.Create(records, reshuffle=False)
               | ImagePhashDedup(max_distance=k, dihedral=dihedral, **kwargs).with_outputs())
    assert_that(tagged(outputs), check_against_oracle(records, k, dihedral, kwargs.get("keep", "largest")))
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in found}


def test_oracle_has_something_to_find():
    """The data must hold near pairs that are not exact, and mirrored copies only dihedral finds."""
    records = make_near_dup_records(seed=0)
    plain, _ = oracle(records, 12, dihedral=False)
    with_flips, _ = oracle(records, 12, dihedral=True)
    assert any(v and v[1] > 0 for v in plain.values())
    assert sum(v is not None for v in with_flips.values()) > sum(v is not None for v in plain.values())


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_the_oracle_whatever_the_input_order(seed):
    counts = run(make_near_dup_records(seed), 12)
    assert counts["near_dup_pairs"] > 0


def test_a_search_partition_of_fixed_images_alone():
    """With band_partition_bits, a partition may get fixed images only (no input has their
    prefix), some of them flat: nothing to pair, and no error."""
    import pyarrow as pa

    from beam_phash.near.dofns import SearchDoFn
    from beam_phash.near.fixed import STATE, fixed_batch

    layout = [tuple(b) for b in _native.near_layout(256, 8, 1000)]
    keys = np.frombuffer(bytes(range(96)), dtype=np.uint8).reshape(3, 32)
    fixed = fixed_batch(keys, STATE, pa.array(["a", "b", "c"]), [True, False, False])
    for part, sub in ((0, -1), (0, 0)):
        dofn = SearchDoFn(256, 8, layout, 32, 0 if sub < 0 else 2, 1)
        assert list(dofn.process(((part, sub, 0), [fixed]))) == []


def test_each_pair_at_distance_zero_is_found_once():
    """At k = 0 the first band finds every pair (a copy turned as its variant is): the other
    search groups must not find them again, or `near_dup_pairs` counts each once per group."""
    records = []
    for path in PHOTOS[:3]:
        im = Image.open(path).convert("RGB")
        im = im.crop((0, 0, im.width // 16 * 16, im.height // 16 * 16))
        for name, t in (("", None), ("~rot", Image.Transpose.ROTATE_90)):
            buf = io.BytesIO()
            (im if t is None else im.transpose(t)).save(buf, "PNG")
            records.append({"id": path.name + name, "image": buf.getvalue()})
    pairs = [run(records, 0, dihedral=True, search_partitions=s)["near_dup_pairs"] for s in (1, 4)]
    assert pairs == [3, 3], pairs


@pytest.mark.parametrize("options", [[], MULTI], ids=["in-process", "multi-process"])
def test_dihedral_matches_the_oracle(options):
    run(make_near_dup_records(3), 14, dihedral=True, options=options, keep="smallest_id")


def _random_hashes(n, bits, k, seed):
    """Random hashes, a third of them near copies (k, k + 1 or 1..k bits flipped) of earlier
    ones, and some near-uniform ones (few bits set), whose band values collide en masse."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if out and roll < 0.33:
            h = rng.choice(out)
            for bit in rng.sample(range(bits), rng.choice([k, k + 1, rng.randint(1, k)])):
                h ^= 1 << bit
        elif roll < 0.4:
            h = sum(1 << b for b in rng.sample(range(bits), rng.randint(0, 6)))
        else:
            h = rng.getrandbits(bits)
        out.append(h)
    width = (bits + 7) // 8
    return [h.to_bytes(width, "little") for h in out]


def _search_all(hashes, k, bits, prefix_bits=0):
    """{(a, b): distance} over every band (and sub-block partition) of the chosen layout."""
    width = len(hashes[0])
    packed = np.frombuffer(b"".join(hashes), dtype=np.uint8)
    ids = np.arange(len(hashes), dtype=np.uint64)
    layout = _native.near_layout(bits, k, len(hashes))
    found = {}
    for band, (start, w, radius) in enumerate(layout):
        parts = [{}]
        if prefix_bits:
            parts = [dict(sub=j, prefix_bits=min(prefix_bits, sw), prefix=p)
                     for j, (_, sw) in enumerate(sub_blocks(start, w, radius))
                     for p in range(1 << min(prefix_bits, sw))]
        for kw in parts:
            a, b, d, *_ = _native.near_search(packed, ids.view(np.uint8), hash_bytes=width, bits=bits,
                                              max_distance=k, layout=layout, band=band, **kw)
            for x, y, dist in zip(np.frombuffer(a, np.uint64), np.frombuffer(b, np.uint64),
                                  np.frombuffer(d, np.uint32)):
                pair = (int(min(x, y)), int(max(x, y)))
                assert pair not in found, f"{pair} emitted twice"
                found[pair] = int(dist)
    return found


@pytest.mark.parametrize("bits,k", [(256, 16), (256, 28), (36, 8), (64, 6)])
def test_rust_search_finds_what_the_python_reference_finds(bits, k):
    """The banded search over all bands equals the earlier Python implementation (all pairs of
    every one of its k + 1 band groups, no window), partitioned by sub-block prefix or not."""
    hashes = _random_hashes(600, bits, k, seed=bits + k)
    nodes = [reference.Node(str(i), (str(i),), h) for i, h in enumerate(hashes)]
    groups = {}
    for n in nodes:
        for key in reference.band_keys(n, reference.band_edges(bits, k)):
            groups.setdefault(key, []).append(n)
    expected = {}
    for members in groups.values():
        for e in reference.verify_group(members, k, max_group=10 ** 9, window=0)[0]:
            expected[(min(int(e.a), int(e.b)), max(int(e.a), int(e.b)))] = e.distance
    assert any(d == k for d in expected.values())
    assert _search_all(hashes, k, bits) == expected
    assert _search_all(hashes, k, bits, prefix_bits=2) == expected


def test_padding_bits_never_count():
    """phash at hash_size 6 is 36 bits in 5 bytes: the layout covers exactly the real bits, and a
    hex hash with a padding bit set is refused."""
    bits = beam_phash.hash_bits("phash", 6)
    layout = _native.near_layout(bits, 8)
    assert layout[0][0] == 0 and sum(w for _, w, _ in layout) == bits
    real = beam_phash.hash_image(PHOTOS[0].read_bytes(), hash_size=6)
    assert bytes(real)[-1] >> 4 == 0  # the padding of a real hash is the top bits, and zero
    _, errors = _native.parse_hex_hashes(["ffffffffff", "ffffffff0f", "fff", None, 7], bits)
    assert "bits set past the 36 bits" in errors[0] and errors[1] is None
    assert "expected 10 hex digits" in errors[2] and errors[3] == "missing hash" and "int" in errors[4]


@pytest.mark.parametrize("call", [
    lambda h, ids: _native.near_pairs_brute(h, ids, hash_bytes=8, max_distance=2, threads=beam_phash.MAX_THREADS + 1),
    lambda h, ids: _native.near_pairs_brute(h, ids, hash_bytes=8, max_distance=2, threads=0),
    lambda h, ids: _native.near_pairs_brute(h, ids, hash_bytes=8, max_distance=2, threads=-1),
    lambda h, ids: _native.near_search(h, ids, hash_bytes=8, bits=64, max_distance=2,
                                       layout=_native.near_layout(64, 2), band=[0, 1], threads=5000),
    lambda h, ids: _native.near_resolve(b"", b"", b"", b"", b"", hash_bytes=8, dihedral=False,
                                        max_distance=2, threads=0),
], ids=["brute-over", "brute-zero", "brute-negative", "search", "resolve"])
def test_every_parallel_kernel_takes_threads_from_1_to_max_threads(call):
    """As hash_images does: a mistyped count neither starts (and keeps) thousands of threads nor
    comes back as PyO3's OverflowError."""
    hashes = np.arange(4, dtype=np.uint64).view(np.uint8)
    with pytest.raises(ValueError, match=f"threads must be between 1 and {beam_phash.MAX_THREADS}, got"):
        call(hashes, np.arange(4, dtype=np.uint64).view(np.uint8))


def test_caller_mistakes_in_the_near_kernels_are_value_errors():
    """Not InternalError (a bug of ours), nor an abort: a field whose end overflows 32 bits, an
    edge to an id never added, a bit count no hash has (it sized tables and buffers: 2**32 - 1
    bits took gigabytes, then aborted), a key width whose arithmetic wrapped, and a band listed
    twice (its pairs came twice)."""
    with pytest.raises(ValueError, match="bits 4294967295..4294967296 of 64-bit hashes") as field:
        _native.near_fields(bytes(8), hash_bytes=8, bits=64, fields=[(2**32 - 1, 1)])
    components = _native.Components()
    components.add_ids(np.array([1, 2], dtype=np.uint64).view(np.uint8))
    with pytest.raises(ValueError, match="edge end 3 was not given to add_ids") as edge:
        components.union(np.array([1], dtype=np.uint64).view(np.uint8), np.array([3], dtype=np.uint64).view(np.uint8))
    # InternalError is a ValueError too: these must not be one.
    assert not isinstance(field.value, beam_phash.InternalError) and not isinstance(edge.value, beam_phash.InternalError)
    layout = _native.near_layout(4096, 3)
    assert layout[0][0] == 0 and sum(w for _, w, _ in layout) == 4096
    too_many = "bits must be between 1 and 4096 .the most any hash has., got 4294967295"
    for call in (lambda: _native.near_layout(2**32 - 1, 5), lambda: _native.parse_hex_hashes([None], 2**32 - 1),
                 lambda: _native.parse_hex_column(np.zeros(2, dtype=np.int64).view(np.uint8), b"", 2**32 - 1),
                 lambda: _native.near_fields(b"", hash_bytes=2**29, bits=2**32 - 1, fields=[])):
        with pytest.raises(ValueError, match=too_many) as raised:
            call()
        assert not isinstance(raised.value, beam_phash.InternalError)
    with pytest.raises(ValueError, match="hash_bytes must be between 1 and 512, got 2049638230412172403") as wide:
        # (9 key bytes per hash byte and one more: this width wrapped to 12-byte keys)
        _native.near_resolve(b"", b"", b"", b"", bytes(12), hash_bytes=2049638230412172403, dihedral=True,
                             max_distance=1)
    assert not isinstance(wide.value, beam_phash.InternalError)
    hashes, ids = bytes(16), np.arange(2, dtype=np.uint64).view(np.uint8)
    with pytest.raises(ValueError, match="band 0 is listed twice"):
        _native.near_search(hashes, ids, hash_bytes=8, bits=64, max_distance=2, layout=_native.near_layout(64, 2),
                            band=[0, 0])


def _resolve_case(rng, dihedral):
    """Random 64-bit hashes in tight clusters (chains and groups), some flat, with variants when
    ``dihedral``: (names, ranks, keys as rows, the brute-force edges {(a, b): distance} with a the
    better ranked, each node's component)."""
    n = rng.randint(2, 60)
    names = [f"n{i:03d}" for i in range(n)]
    ranks = {name: (rng.randint(0, 3), name) for name in names}
    centres = [rng.getrandbits(64) for _ in range(rng.randint(1, 4))]
    flip = lambda h, bits: h ^ sum(1 << b for b in rng.sample(range(64), bits))  # noqa: E731
    hashes = [flip(rng.choice(centres), rng.randint(0, 6)) for _ in names]
    variants = [[h] + [flip(h, rng.randint(0, 40)) for _ in range(7)] if dihedral else [h] for h in hashes]
    flat = [rng.random() < 0.15 for _ in names]
    if rng.random() < 0.5 and n > 2:  # a flat image with a non-flat twin of the same hash
        hashes[1], variants[1], flat[1], flat[2] = hashes[2], variants[2], True, False
    k = rng.randint(0, 8)
    pop = lambda x: bin(x).count("1")  # noqa: E731

    def distance(x, y):
        if not dihedral:
            return pop(hashes[x] ^ hashes[y])
        return min(min(pop(v ^ hashes[y]) for v in variants[x]), min(pop(hashes[x] ^ v) for v in variants[y]))

    edges = {}
    for x in range(n):
        for y in range(x + 1, n):
            d = distance(x, y)
            if d <= (0 if flat[x] or flat[y] else k):
                a, b = sorted((x, y), key=lambda i: ranks[names[i]])
                edges[(a, b)] = d
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    components = np.array([find(i) * 1000 + 7 for i in range(n)], dtype=np.uint64)
    rows = [[h] + (vs if dihedral else []) for h, vs in zip(hashes, variants)]  # hash, variants, flat byte
    keys = np.array([[b for h in row for b in h.to_bytes(8, "little")] + [int(f)] for row, f in zip(rows, flat)],
                    dtype=np.uint8)
    return names, ranks, keys, edges, components, k


@pytest.mark.parametrize("dihedral", [False, True])
def test_rust_resolve_matches_the_python_reference(dihedral):
    """The kernel reads no edges: it compares each image with its component's kept ones. It must
    decide as the reference does over the brute-force edges, and list every kept neighbour of a
    dropped image by (distance, rank): flat images at distance 0 only, variants both ways."""
    rng = random.Random(11 + dihedral)
    for _ in range(60):
        names, ranks, keys, edges, components, k = _resolve_case(rng, dihedral)
        n = len(names)
        ref = reference.resolve([reference.Edge(names[a], ranks[names[a]], names[b], ranks[names[b]], d)
                                 for (a, b), d in edges.items()])
        offsets = np.zeros(n + 1, dtype=np.uint64)
        offsets[1:] = np.cumsum([len(x) for x in names])
        got = _native.near_resolve(
            components.view(np.uint8), np.array([ranks[x][0] for x in names], dtype=np.uint64).view(np.uint8),
            offsets.view(np.uint8), "".join(names).encode(), keys, hash_bytes=8, dihedral=dihedral,
            max_distance=k)
        dropped, keepers, dist = (np.frombuffer(x, np.uint32) for x in got)
        first, lists = {}, {}  # per dropped node: the keeper (first ranked before it), all kept neighbours
        for i, j, e in zip(dropped, keepers, dist):
            if ranks[names[j]] < ranks[names[i]]:
                first.setdefault(names[i], (names[j], int(e)))
            lists.setdefault(int(i), []).append((int(e), ranks[names[j]]))
        assert first == ref
        kept = {i for i in range(n) if names[i] not in ref}
        for i, near in lists.items():
            want = sorted((d, ranks[names[o]]) for (a, b), d in edges.items() for o in (a, b)
                          if i in (a, b) and o != i and o in kept)
            assert near == want


def test_a_chain_keeps_both_ends():
    """a-b and b-c within k, a-c not: a is kept, b dropped for a, c kept (no chains)."""
    E = reference.Edge
    assert reference.resolve([E("a", (0,), "b", (1,), 5), E("b", (1,), "c", (2,), 5)]) == {"b": ("a", 5)}


def hex_records(seed, n=1500, bits=256, k=16):
    """Records carrying hex hashes (random, near copies, near-uniform), with bad values, shuffled."""
    hashes = _random_hashes(n, bits, k, seed)
    records = [{"id": f"r{i:05d}", "h": h.hex()} for i, h in enumerate(hashes)]
    records += [{"id": "bad-width", "h": "abcd"}, {"id": "bad-hex", "h": "zz" * 32}, {"id": "bad-missing"},
                {"id": "bad-none", "h": None}]
    random.Random(seed).shuffle(records)
    return records


def hex_oracle(records, k):
    """Greedy by id over brute-force distances (numpy): {id: None or (keeper, distance)}, failed."""
    good = sorted((r for r in records if isinstance(r.get("h"), str) and len(r["h"]) == 64
                   and all(c in "0123456789abcdef" for c in r["h"])), key=lambda r: r["id"])
    words = np.frombuffer(b"".join(bytes.fromhex(r["h"]) for r in good), dtype=np.uint64).reshape(len(good), -1)
    decided, kept = {}, []
    for i, r in enumerate(good):
        if kept:
            d = np.bitwise_count(words[kept] ^ words[i]).sum(axis=1)
            j = int(np.argmin(d))  # nearest; ties: the earlier kept, which is the better ranked
            if d[j] <= k:
                decided[r["id"]] = (good[kept[j]]["id"], int(d[j]))
                continue
        decided[r["id"]] = None
        kept.append(i)
    failed = {r["id"] for r in records} - set(decided)
    return decided, failed


def run_hex(records, k, options=(), **kwargs):
    expected, failed = hex_oracle(records, k)
    assert any(v and v[1] == k for v in expected.values()) and failed

    def check(tagged_records):
        got = {}
        for tag, r in tagged_records:
            assert r["id"] not in got, f"{r['id']} emitted twice"
            got[r["id"]] = (None if tag == "kept" else (r["duplicate_of"], r["distance"]) if tag == "duplicates"
                            else "failed:" + r["error"])
        assert {i for i, v in got.items() if isinstance(v, str)} == failed
        assert got["bad-width"].startswith("failed:h: expected 64 hex digits")
        assert {i: v for i, v in got.items() if not isinstance(v, str)} == expected

    p = TestPipeline(options=PipelineOptions(list(options)))
    outputs = (p | beam.Create(records, reshuffle=False)
               | ImagePhashDedup(max_distance=k, hash_column="h", **kwargs).with_outputs())
    assert_that(tagged(outputs), check)
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in found}


@pytest.mark.parametrize("seed,kwargs", [(1, {}), (2, {"band_partition_bits": 2, "partitions": 3}),
                                         (3, {"partitions": 1, "search_partitions": 1}),
                                         (9, {"search_partitions": 40})])
def test_hash_column_matches_the_oracle(seed, kwargs):
    counts = run_hex(hex_records(seed), 16, **kwargs)
    assert counts["near_dup_pairs"] > 0 and counts["near_graph_images"] > 0


def test_hash_column_multi_process_at_k28():
    run_hex(hex_records(4), 28, options=MULTI)


def test_degenerate_hashes_keep_exact_recall():
    """3000 near-uniform hashes (at most 3 bits set) share every band value: the big runs are
    brute-forced, never windowed, and the result is still the oracle's."""
    rng = random.Random(5)
    records = []
    for i in range(3000):
        h = sum(1 << b for b in rng.sample(range(256), rng.randint(1, 3)))
        records.append({"id": f"u{i:05d}", "h": h.to_bytes(32, "little").hex()})
    records += hex_records(6, n=200)
    counts = run_hex(records, 4)
    assert counts["near_big_runs"] > 0


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="max_distance must be between 0 and 255"):
        ImagePhashDedup(max_distance=256)
    with pytest.raises(ValueError, match="max_distance must be between 0 and 143"):
        ImagePhashDedup(max_distance=144, algorithm="double_gradient")
    with pytest.raises(ValueError, match="keep must be one of largest, smallest_id"):
        ImagePhashDedup(max_distance=4, keep="newest")
    with pytest.raises(ValueError, match="do not apply"):
        ImagePhashDedup(max_distance=4, backend="ray")
    with pytest.raises(ValueError, match="dihedral must be True or False"):
        ImagePhashDedup(dihedral="yes")
    with pytest.raises(ValueError, match="cannot be used with hash_column"):
        ImagePhashDedup(max_distance=4, dihedral=True, hash_column="h")
    with pytest.raises(ValueError, match="band_partition_bits must be between 0 and 16"):
        ImagePhashDedup(max_distance=4, band_partition_bits=17)
    with pytest.raises(ValueError, match="search_partitions must be between 1 and 4096"):
        ImagePhashDedup(max_distance=4, search_partitions=0)


def test_the_job_writes_near_duplicates_with_distances_and_reports_them(tmp_path):
    from job_outputs import basename, read
    from pipelines import dedup_images

    folder = tmp_path / "in"
    folder.mkdir()
    records = [r for r in make_near_dup_records(5) if r["id"].split("~")[0] in ("pool", "snow", "chelsea")]
    for r in records:
        (folder / f"{r['id']}.img").write_bytes(r["image"])
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(folder), "--output", str(out), "--max-distance", "14",
                              "--dihedral", "--keep", "smallest_id"]) == 0
    # The oracle, on the records as the job names them (id = path).
    named = [dict(r, id=str(folder / f"{r['id']}.img")) for r in records]
    expected, _ = oracle(named, 14, dihedral=True, keep="smallest_id")
    kept = {r["id"] for r in read(out, "kept")}
    dups = {r["id"]: (r["duplicate_of"], r["distance"]) for r in read(out, "duplicates")}
    assert kept == {i for i, v in expected.items() if v is None}
    assert dups == {i: v for i, v in expected.items() if v is not None}
    assert sorted(basename(i) for i in kept) == ["chelsea.img", "pool.img", "snow.img"]
    page = (out / "report.html").read_text()
    assert "records within 14 bits, rotated or mirrored included" in page
    assert any(f"distance {d}<br>" in page for _, d in dups.values() if d > 0)


def test_auto_threshold_is_the_measured_one():
    assert ImagePhashDedup(max_distance="auto").max_distance == 16
    assert ImagePhashDedup(max_distance="auto", hash_size=32).max_distance == 80
    assert ImagePhashDedup(max_distance="auto", algorithm="dhash").max_distance == 12
    assert ImagePhashDedup(max_distance="auto", algorithm="double_gradient").max_distance == 8
    with pytest.raises(ValueError, match="no measured max_distance for ahash at hash_size 16"):
        ImagePhashDedup(max_distance="auto", algorithm="ahash")


def test_two_images_under_one_id_are_judged_apart():
    """Ids should be unique; when they are not, each image still gets its own decision."""
    pool = (next(p for p in PHOTOS if p.name == "pool.jpg")).read_bytes()
    snow = next(p for p in PHOTOS if p.name == "snow.jpg")
    img = Image.open(snow)
    half = _jpeg(img.resize((img.width // 2, img.height // 2)), 80)
    # y (the larger snow) is kept and x's half-size snow dropped for it; x's pool, far from
    # everything, must stay kept although it shares x's id.
    records = [{"id": "y", "image": snow.read_bytes()}, {"id": "x", "image": pool}, {"id": "x", "image": half}]
    p = TestPipeline()
    outputs = p | beam.Create(records, reshuffle=False) | ImagePhashDedup(max_distance=16).with_outputs()

    def check(tagged_records):
        kept = sorted(r["id"] for t, r in tagged_records if t == "kept")
        dups = [(r["id"], r["duplicate_of"]) for t, r in tagged_records if t == "duplicates"]
        assert kept == ["x", "y"] and dups == [("x", "y")], (kept, dups)
    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


@pytest.mark.parametrize("given", ["images", "hashes"])
def test_an_empty_id_ranks_as_an_id_whether_images_or_hashes_are_given(given):
    """"" is an id (only a missing or None one is not): with keep="smallest_id" it comes first,
    from images as from a hash column (images made it a record without an id, ranked last)."""
    pool = next(p for p in PHOTOS if p.name == "pool.jpg").read_bytes()
    value, kwargs = (pool, {}) if given == "images" else (beam_phash.hash_image(pool).hex(), {"hash_column": "image"})
    records = [{"id": "z", "image": value}, {"id": "", "image": value}]
    p = TestPipeline()
    outputs = p | beam.Create(records, reshuffle=False) | ImagePhashDedup(
        max_distance=4, keep="smallest_id", **kwargs).with_outputs()

    def check(tagged_records):
        assert sorted((t, r["id"]) for t, r in tagged_records) == [("duplicates", "z"), ("kept", "")], tagged_records
    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


def test_the_job_dedups_a_hash_column(tmp_path, capsys):
    """--hash-column: Parquet with hex hashes (and bad values) against the oracle; a column of
    another bit count is a one-line configuration error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from job_outputs import read
    from pipelines import dedup_images

    records = hex_records(7, n=800)
    src = tmp_path / "hashes"
    src.mkdir()
    for i, part in enumerate((records[:400], records[400:])):
        pq.write_table(pa.table({"id": [r["id"] for r in part], "h": [r.get("h") for r in part]}),
                       src / f"part-{i}.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--hash-column", "h",
                              "--max-distance", "16", "--output", str(out)]) == 0
    expected, failed = hex_oracle(records, 16)
    assert {r["id"] for r in read(out, "kept")} == {i for i, v in expected.items() if v is None}
    assert {r["id"]: (r["duplicate_of"], r["distance"]) for r in read(out, "duplicates")} == {
        i: v for i, v in expected.items() if v is not None}
    bad = {r["id"]: r["error"] for r in read(out, "failed")}
    assert set(bad) == failed and bad["bad-hex"].startswith("h: not hex")

    capsys.readouterr()
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--hash-column", "h",
                              "--hash-size", "8", "--max-distance", "4", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds hashes of 64 hex digits (256 bits)" in err and "64 bits" in err, err
