"""Near-duplicate dedup against a brute-force oracle (all pairs, greedy by rank): the same kept
set in any input order, in-process and multi-process, with and without dihedral variants; the
pigeonhole property of the bands; and the guard on oversized band groups."""
import io
import random

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image, ImageEnhance

import beam_phash
from beam_phash import METRICS_NAMESPACE, ImagePhashDedup, near_dup
from conftest import PHOTOS
from test_transform import tagged

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


@pytest.mark.parametrize("options", [[], MULTI], ids=["in-process", "multi-process"])
def test_dihedral_matches_the_oracle(options):
    run(make_near_dup_records(3), 14, dihedral=True, options=options, keep="smallest_id")


def test_oversized_band_groups_are_capped_and_counted():
    counts = run(make_near_dup_records(4), 12, max_band_group=2)
    assert counts["band_groups_capped"] > 0  # small groups still fit the 64-member window


def test_pigeonhole_every_pair_within_k_shares_a_band():
    rng = random.Random(7)
    for k in (1, 5, 12, 30):
        bands = near_dup.band_edges(256, k)
        assert bands[0][0] == 0 and bands[-1][1] == 256 and len(bands) == k + 1
        for _ in range(200):
            a = rng.getrandbits(256)
            b = a
            for bit in rng.sample(range(256), rng.randint(0, k)):
                b ^= 1 << bit
            na = near_dup.Node("a", ("a",), a.to_bytes(32, "big"))
            nb = near_dup.Node("b", ("b",), b.to_bytes(32, "big"))
            assert near_dup.band_keys(na, bands) & near_dup.band_keys(nb, bands)
            assert near_dup.distance(na, nb) == bin(a ^ b).count("1")


def test_a_chain_keeps_both_ends():
    """a-b and b-c within k, a-c not: a is kept, b dropped for a, c kept (no chains)."""
    E = near_dup.Edge
    dropped = near_dup.resolve([E("a", (0,), "b", (1,), 5), E("b", (1,), "c", (2,), 5)])
    assert dropped == {"b": ("a", 5)}


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
    assert ImagePhashDedup(max_distance="auto").max_distance == 28
    assert ImagePhashDedup(max_distance="auto", hash_size=32).max_distance == 160
    with pytest.raises(ValueError, match="no measured max_distance for ahash at hash_size 16"):
        ImagePhashDedup(max_distance="auto", algorithm="ahash")


def test_bands_cover_the_real_bits_and_never_the_padding():
    """phash at hash_size 6 is 36 bits in 5 bytes: bit i is bit i % 8 of byte i // 8, and the 4
    padding bits on top must not form a band (at k = 8, 9 bands of 4 bits) every image shares."""
    bits = beam_phash.hash_bits("phash", 6)
    assert bits == 36
    bands = near_dup.band_edges(bits, 8)
    rng = random.Random(3)
    for _ in range(200):
        a = rng.getrandbits(bits)
        b = a ^ ((1 << bits) - 1)  # every real bit differs, padding equal
        na = near_dup.Node("a", ("a",), a.to_bytes(5, "little"))
        nb = near_dup.Node("b", ("b",), b.to_bytes(5, "little"))
        assert not near_dup.band_keys(na, bands) & near_dup.band_keys(nb, bands)
        c = a
        for bit in rng.sample(range(bits), 8):
            c ^= 1 << bit
        nc = near_dup.Node("c", ("c",), c.to_bytes(5, "little"))
        assert near_dup.band_keys(na, bands) & near_dup.band_keys(nc, bands)
    real = beam_phash.hash_image(PHOTOS[0].read_bytes(), hash_size=6)
    assert bytes(real)[-1] >> 4 == 0  # the padding of a real hash is the top bits, and zero


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
