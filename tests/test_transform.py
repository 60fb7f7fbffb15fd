"""ImagePhashDedup against the brute-force oracle: both backends, in-process and multi-process,
with retries, counters, the plain output form, named backends and argument validation."""
import hashlib
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import defaultdict

import apache_beam as beam
import pytest
import ray
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

import beam_phash
from beam_phash import METRICS_NAMESPACE, ImagePhashDedup
from beam_phash.exact.ray_client import RayDedupBackend
from beam_phash.exact.ray_dofns import RayDedupDoFn
from beam_phash.routing import bucket_of
from conftest import PHOTOS
from dedup_oracle import check_outputs, make_records, oracle
from processes import processes_of
from tagged import tagged

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def run_dedup(records, options=(), runner=None, **kwargs):
    p = TestPipeline(runner=runner, options=PipelineOptions(list(options)))
    outputs = p | beam.Create(records, reshuffle=False) | ImagePhashDedup(**kwargs).with_outputs()
    assert_that(tagged(outputs), check_outputs(records))
    result = p.run()
    result.wait_until_finish()
    return result


def counters(result):
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in found}


def expected_counts(records):
    groups, failed = oracle(records)
    kept = len(groups)
    return {"inputs": len(records), "kept": kept, "failed": len(failed),
            "duplicates": len(records) - kept - len(failed)}


# --- the state backend ------------------------------------------------------------------------

@pytest.mark.parametrize("options", [[], MULTI], ids=["in-process", "multi-process"])
def test_state_backend_matches_oracle(options):
    records = make_records(seed=1)
    result = run_dedup(records, options, backend="state", batch_size=8)
    assert counters(result) == expected_counts(records)
    # the distributions of the hashing step (which hashes in a thread of its own) are reported
    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["distributions"]
    sizes = {d.key.metric.name: d.committed for d in found}
    assert sizes["hash_batch_size"].sum == len([r for r in records if _has_bytes(r)]), sizes
    assert sizes["hash_batch_size"].max <= 8, sizes
    assert sizes["hash_batch_latency_ms"].count == sizes["hash_batch_size"].count, sizes


def _has_bytes(record) -> bool:
    """Whether the record reaches the decoder (it has image bytes, good or bad)."""
    from beam_phash.records import BadRecord, image_bytes
    try:
        image_bytes(record, "image")
        return True
    except BadRecord:
        return False


# --- the Ray backend --------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.parametrize("options", [[], MULTI], ids=["in-process", "multi-process"])
def test_ray_backend_matches_oracle(ray_cluster, options):
    records = make_records(seed=2)
    result = run_dedup(records, options, backend="ray", num_buckets=4, batch_size=8, claim_batch=16)
    assert counters(result) == expected_counts(records)


@pytest.mark.ray
def test_fresh_backend_is_released_at_the_end(ray_cluster):
    run_dedup(make_records(seed=3), backend="ray", num_buckets=3)
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("run-")]
    assert left == []


_failed_once = set()


def _flaky_route(self, batch, *rest):
    """Fail each batch once *after* its hashes reached the actors, as a crashed worker would."""
    key = tuple(h.owner for h in batch)
    if key not in _failed_once and len(_failed_once) < 2:  # the runner gives a bundle 4 attempts
        _failed_once.add(key)
        raise RuntimeError("injected failure after the backend call")
    yield from _original_route(self, batch, *rest)


_original_route = RayDedupDoFn._route


@pytest.mark.ray
def test_retried_bundles_lose_nothing(ray_cluster, monkeypatch):
    """The BundleBasedDirectRunner retries a failed bundle; the retry must still find its own
    records as the keepers, so the output equals a run without failures."""
    _failed_once.clear()
    monkeypatch.setattr(RayDedupDoFn, "_route", _flaky_route)
    records = make_records(seed=4)
    result = run_dedup(records, runner="BundleBasedDirectRunner", backend="ray", num_buckets=4,
                       batch_size=8, claim_batch=16)
    assert len(_failed_once) == 2, "no failure was injected"
    # (Counters are not compared here: this runner also keeps the increments of failed attempts.)


class _SlowBackend:
    """A backend whose connection (started by setup, as RayDedupBackend.connect_soon does) ends
    a while later."""

    def __init__(self):
        self.started_actors = False

    def connect_soon(self):
        import concurrent.futures
        pool = concurrent.futures.ThreadPoolExecutor(1)
        future = pool.submit(self._start)
        pool.shutdown(wait=False)
        return future

    def _start(self):
        time.sleep(0.5)
        self.started_actors = True


def test_a_bundle_that_claims_nothing_waits_for_the_connection_its_setup_started():
    """Every record failed to hash, so nothing is claimed: the connection's thread must still be
    done when the bundle is, not create actors after the backend is released or hang the exit
    in Ray's actor registration once an embedded Ray is stopped (a helper's repro: `beam-phash
    --input` a folder of text files hung in 3 runs of 8)."""
    backend = _SlowBackend()
    dofn = RayDedupDoFn(backend)
    dofn.setup()
    dofn.start_bundle()
    assert list(dofn.finish_bundle() or []) == []
    assert backend.started_actors
    dofn.teardown()


@pytest.mark.ray
def test_named_backend_dedups_across_pipelines(ray_cluster):
    records = make_records(seed=5)
    first_half = records[: len(records) // 2]
    # New records (new ids) carrying the same images. The same id claiming a hash again would be
    # taken for a retry and kept.
    second = [dict(r, id=r["id"] + "/run2") for r in records]
    name = "shared-test-backend"
    try:
        run_dedup(first_half, backend="ray", backend_name=name, num_buckets=2)
        # Run 2 sees everything again: all hashes already kept in run 1 are now duplicates.
        groups1, _ = oracle(first_half)
        groups2, failed2 = oracle(second)
        p = TestPipeline()
        kept, dups, failed = (p | beam.Create(second)
                              | ImagePhashDedup(backend="ray", backend_name=name, num_buckets=2).with_outputs())
        new_hashes = sorted(set(groups2) - set(groups1))
        assert_that(kept | beam.Map(lambda r: r["image_phash"]), equal_to(new_hashes), label="OnlyNew")
        assert_that(failed | beam.Map(lambda r: r["id"]), equal_to(sorted(failed2)), label="Failed")
        # Every run-2 record whose image run 1 saw is a duplicate of a run-1 record.
        expected_old = sorted(i for h in groups1 for i in groups2[h])
        assert_that(dups | beam.Filter(lambda r: not r["duplicate_of"].endswith("/run2"))
                    | beam.Map(lambda r: r["id"]), equal_to(expected_old), label="PointAtRun1")
        p.run().wait_until_finish()
        # A later pipeline on the backend with another layout would miss what it holds: refused.
        with pytest.raises(ValueError, match="has num_buckets=2, this pipeline asks for 4"):
            _ = TestPipeline() | beam.Create(second) | ImagePhashDedup(backend="ray", backend_name=name, num_buckets=4)
        with pytest.raises(ValueError, match="runs 2 actors, this pipeline asks for num_actors=1"):
            _ = (TestPipeline() | beam.Create(second)
                 | ImagePhashDedup(backend="ray", backend_name=name, num_buckets=2, num_actors=1))
    finally:
        RayDedupBackend(ray_cluster, name, 2).connect().release()


@pytest.mark.ray
def test_buckets_share_one_actor_per_cpu_by_default(ray_cluster):
    """16 buckets on the 2-CPU test cluster: 2 actor processes, 8 buckets each, every bucket
    answering; release removes the actors and the recorded layout."""
    name = "layout-test"
    backend = RayDedupBackend(ray_cluster, name, 16).connect()
    try:
        assert backend.actors == 2
        hashes = [bytes([i]) * 32 for i in range(64)]
        assert backend.claim(hashes, [f"a{i}" for i in range(64)]) == [None] * 64
        assert backend.claim(hashes, [f"b{i}" for i in range(64)]) == [f"a{i}" for i in range(64)]
        stats = backend.stats()
        assert [s["bucket"] for s in stats] == list(range(16))
        assert sum(s["hashes"] for s in stats) == 64
        assert len({s["pid"] for s in stats}) == 2
        assert {s["pid"] for s in stats[0::2]} != {s["pid"] for s in stats[1::2]}
    finally:
        backend.release()
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(name)]
    assert RayDedupBackend(ray_cluster, name, 4, num_actors=4).connect().actors == 4  # the layout was forgotten
    RayDedupBackend(ray_cluster, name, 4).connect().release()


def _job_on_embedded_ray(tmp_path, before: str = "", after: str = "") -> subprocess.CompletedProcess:
    """A script that runs ImagePhashDedup with no Ray running (``ray_address=None``), in a
    process of its own; checked to exit 0 and keep what the oracle keeps. ``before`` and
    ``after``: lines of the script around the pipeline."""
    script = tmp_path / "job.py"
    script.write_text("import apache_beam as beam, ray\n"
                      "from beam_phash import ImagePhashDedup\n"
                      "from beam_phash.exact import ray_cluster, ray_private\n"
                      "from dedup_oracle import make_records, oracle\n"
                      + textwrap.dedent(before) + textwrap.dedent("""
        records = [r for r in make_records(seed=6) if not r["id"].startswith("bad")]
        with beam.Pipeline() as p:
            kept = p | beam.Create(records) | ImagePhashDedup(num_buckets=2)
            kept | beam.combiners.Count.Globally() | beam.Map(lambda n: print("KEPT", n))
        print("EXPECTED", len(oracle(records)[0]))
    """) + textwrap.dedent(after))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    expected = out.stdout.split("EXPECTED ")[1].split()[0]
    assert f"KEPT {expected}\n" in out.stdout, out.stdout
    return out


def test_embedded_ray_starts_on_loopback_and_stops(tmp_path):
    """ray_address=None with no Ray running: the job starts one on 127.0.0.1 and it is gone
    when the launcher exits."""
    out = _job_on_embedded_ray(tmp_path, after="""
        print("ADDRESS", ray_cluster._started_here)
        print("SESSION", ray.get_runtime_context().get_node_id() and ray._private.worker._global_node.get_session_dir_path())
    """)
    assert "ADDRESS 127.0.0.1:" in out.stdout
    # Ray's two routine notices of an embedded start (ray_cluster._RoutineNotices) are not shown.
    assert "Token authentication is enabled" not in out.stderr, out.stderr
    assert "SIGTERM handler is not set" not in out.stderr, out.stderr
    session = out.stdout.split("SESSION ")[1].split()[0]
    assert os.path.basename(session).startswith("session_")
    deadline = time.time() + 10
    while processes_of(session) and time.time() < deadline:
        time.sleep(0.2)
    assert not processes_of(session), "the embedded Ray outlived its launcher"


# --- the plain output form --------------------------------------------------------------------

def test_plain_form_is_kept_plus_failed():
    records = make_records(seed=7)
    groups, failed = oracle(records)
    with TestPipeline() as p:
        out = p | beam.Create(records) | ImagePhashDedup(backend="state")
        ok = out | "Hashed" >> beam.Filter(lambda r: r["image_phash"] is not None)
        bad = out | "Unhashed" >> beam.Filter(lambda r: r["image_phash"] is None)
        assert_that(ok | "H" >> beam.Map(lambda r: r["image_phash"]), equal_to(sorted(groups)), label="Kept")
        assert_that(bad | "E" >> beam.Map(lambda r: (r["id"], bool(r["error"]))),
                    equal_to([(i, True) for i in failed]), label="Failed")


def test_records_without_ids():
    """Without ids, byte-identical copies are indistinguishable from retries and are all kept;
    copies with different bytes but the same hash are still deduplicated."""
    data = make_records(seed=8)
    ok = [r for r in data if not r["id"].startswith("bad")]
    for r in ok:
        del r["id"]
    groups, _ = oracle([dict(r, id=str(i)) for i, r in enumerate(ok)])

    def check(tagged):
        kept = [r for t, r in tagged if t == "kept"]
        dups = [r for t, r in tagged if t == "duplicates"]
        if len(kept) + len(dups) != len(ok) or not dups:
            raise BeamAssertException(f"{len(kept)} kept + {len(dups)} duplicates != {len(ok)}")
        if any(r["duplicate_of"] is not None for r in dups):
            raise BeamAssertException("a keeper without id was named")
        contents = defaultdict(set)
        for r in kept:
            contents[r["image_phash"]].add(_digest(r["image"]))
        if set(contents) != set(groups):
            raise BeamAssertException("a hash group has no kept record")
        if any(len(c) != 1 for c in contents.values()):
            raise BeamAssertException("two different byte contents were kept for one hash")
        if len(kept) == len(groups):
            raise BeamAssertException("byte-identical copies without ids should all be kept")

    with TestPipeline() as p:
        outputs = p | beam.Create(ok) | ImagePhashDedup(backend="state").with_outputs()
        assert_that(tagged(outputs), check)


@pytest.mark.parametrize("keep", ["largest", "smallest_id"])
def test_near_mode_keeps_a_record_with_an_id_over_one_without(keep):
    """Ranks compare ids as text; a record without an id ranks after every id, so the keeper of a
    group can be named by its duplicates."""
    image = PHOTOS[0].read_bytes()
    records = [{"image": image}, {"id": "zz", "image": image}, {"id": None, "image": image}]

    def check(tagged_records):
        kept = [r for t, r in tagged_records if t == "kept"]
        dups = [r for t, r in tagged_records if t == "duplicates"]
        assert [r.get("id") for r in kept] == ["zz"], kept
        assert sorted(r["duplicate_of"] for r in dups) == ["zz", "zz"], dups

    with TestPipeline() as p:
        outputs = p | beam.Create(records) | ImagePhashDedup(max_distance=4, keep=keep).with_outputs()
        assert_that(tagged(outputs), check)


def _digest(image):
    data = image["bytes"] if isinstance(image, dict) else image
    return hashlib.sha256(bytes(data)).hexdigest()


# --- routing and validation -------------------------------------------------------------------

def test_hash_column_mode_may_name_its_id_column_image():
    """No image is read with hash_column: a table of (image name, hash) may call its id 'image'."""
    ImagePhashDedup(hash_column="h", id_field="image", backend="state")


def test_a_hugging_face_image_with_a_path_only_says_so():
    from beam_phash.records import BadRecord, image_bytes

    with pytest.raises(BadRecord, match=r"field 'image' has 'bytes' None \(its 'path' 'x.jpg' is not read\)"):
        image_bytes({"image": {"bytes": None, "path": "x.jpg"}}, "image")


def test_routing_uses_the_hash_bits_not_pythons_salted_hash():
    hashes = [bytes([i, 255 - i]) * 16 for i in range(64)]
    code = ("import sys; from beam_phash.routing import bucket_of; "
            f"print([int(b) for b in bucket_of({hashes!r}, 7)])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1
    assert eval(outs.pop()) == list(bucket_of(hashes, 7))
    assert len(set(bucket_of(hashes, 7))) == 7  # spreads over all buckets


@pytest.mark.parametrize("kwargs, message", [
    ({"hash_size": 2}, "hash_size must be between 4 and 64"),
    ({"hash_size": "16"}, "hash_size must be an int"),
    ({"hash_size": True}, "hash_size must be an int"),
    ({"algorithm": "md5"}, "algorithm must be one of"),
    ({"max_distance": "AUTO"}, "max_distance must be an int or 'auto'"),
    ({"backend": "redis"}, "backend must be 'ray' or 'state'"),
    ({"num_buckets": 0}, "num_buckets must be between 1 and 65536"),
    ({"num_buckets": 0, "backend": "state"}, "num_buckets must be between 1 and 65536"),  # unused, still checked
    ({"num_buckets": -1, "max_distance": 4}, "num_buckets must be between 1 and 65536"),
    ({"id_field": "image"}, "image_field and id_field must differ"),
    ({"state_dir": "gs://bucket/state"}, "object stores are not supported"),
    ({"state_dir": "s3://bucket/state", "max_distance": 4}, "object stores are not supported"),
    ({"image_field": ""}, "image_field must be a non-empty string"),
    ({"hash_field": "image"}, "hash_field and image_field must differ"),
    ({"hash_field": "id"}, "hash_field and id_field must differ"),
    ({"hash_field": "error"}, "is a field the transform writes"),
    ({"id_field": "duplicate_of"}, "is a field the transform writes"),
    ({"id_field": 3}, "id_field must be a non-empty string"),
    ({"batch_size": 0}, "batch_size must be between"),
    ({"ray_address": ""}, "ray_address must be a non-empty string"),
    ({"backend_name": "has space"}, "backend_name must be"),
    ({"backend": "state", "backend_name": "x"}, "apply only to backend='ray'"),
    # The Ray backend's numbers are refused where it does not run, not ignored.
    ({"backend": "state", "num_buckets": 4}, "num_buckets applies to exact mode with backend='ray' only"),
    ({"max_distance": 4, "claim_batch": 8, "max_in_flight": 2},
     "claim_batch, max_in_flight apply to exact mode with backend='ray' only"),
    ({"dihedral": True, "num_buckets": 32}, "num_buckets applies to exact mode with backend='ray' only"),
    ({"max_distance": 4, "keep": ""}, "keep must be one of largest, smallest_id"),
    ({"hash_threads": 0}, "hash_threads must be between 1 and 1024"),
    ({"hash_threads": 2**64}, "hash_threads must be between 1 and 1024"),  # not an OverflowError on the workers
    ({"max_pixels": 2**63}, "max_pixels must be between 1 and"),
    ({"keep": "smallest_id"}, "keep applies to near-duplicate dedup"),
    ({"keep": "largest", "backend": "state"}, "keep applies to near-duplicate dedup"),
    ({"claim_batch": 0, "backend": "state"}, "claim_batch must be between 1 and"),  # unused, still checked
    ({"max_in_flight": "x", "max_distance": 4}, "max_in_flight must be an int"),
    ({"hash_column": "h", "id_field": None}, "hash_column needs an id_field"),
])
def test_arguments_are_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImagePhashDedup(**kwargs)


def test_a_reference_hash_column_that_is_the_id_field_is_refused_at_construction():
    """Checked only when the transform was applied, naming hash_column."""
    p = TestPipeline()
    reference = p | beam.Create([{"id": "r", "image_phash": "00" * 32}])
    with pytest.raises(ValueError, match="reference_hash_column and id_field must differ"):
        ImagePhashDedup(reference=reference, reference_hash_column="id")
    with pytest.raises(ValueError, match="reference_hash_column and id_field must differ"):
        ImagePhashDedup(max_distance=4).with_reference(reference, hash_column="id")


@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
def test_an_id_spelled_like_an_id_less_record_s_digest_is_another_record(backend, request):
    """A content-addressed id ("sha256:" and the bytes' SHA-256) and a record without an id of
    the same bytes are two records: one is kept and the other names it, on both backends (the
    Ray backend took them for one record, retried, and kept both)."""
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    photo = PHOTOS[0].read_bytes()
    content_id = "sha256:" + hashlib.sha256(photo).hexdigest()
    records = [{"id": content_id, "image": photo}, {"image": photo}]
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(
        backend=backend, **({"num_buckets": 2} if backend == "ray" else {})).with_outputs()

    def check(rows):
        assert sorted(tag for tag, _ in rows) == ["duplicates", "kept"], rows
        (duplicate,) = [r for tag, r in rows if tag == "duplicates"]
        assert duplicate["duplicate_of"] in (content_id, None), rows

    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


def test_ids_that_look_like_digests_and_hash_records_without_ids():
    """An id such as "sha256:..." is an id like any other (the keeper a duplicate names); a
    record that carries its hash but no id fails with the reason, since with no image bytes to
    tell it by, every record of its hash would look like a retry of the first and be kept."""
    photo = PHOTOS[0].read_bytes()
    records = [{"id": "sha256:ab12", "image": photo}, {"id": "sha256:cd34", "image": photo}]
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(backend="state").with_outputs()

    def check(rows):
        (kept,) = [r for tag, r in rows if tag == "kept"]
        (duplicate,) = [r for tag, r in rows if tag == "duplicates"]
        assert duplicate["duplicate_of"] == kept["id"], rows  # not None

    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()

    h = beam_phash.hash_image(photo).hex()
    records = [{"h": h}, {"id": None, "h": h}, {"id": "x", "h": h}, {"id": "y", "h": h}]
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(backend="state", hash_column="h").with_outputs()

    def check_hashes(rows):
        tags = sorted(tag for tag, _ in rows)
        assert tags == ["duplicates", "failed", "failed", "kept"], rows
        for tag, r in rows:
            assert tag != "failed" or "needs an id" in r["error"], r

    assert_that(tagged(outputs), check_hashes)
    p.run().wait_until_finish()


def test_records_that_carry_their_hash_may_be_any_mapping():
    """As with images, a record is any Mapping (a UserDict here); a value that is none is failed
    with that reason, not as a record without a hash."""
    from collections import UserDict

    h = beam_phash.hash_image(PHOTOS[0].read_bytes()).hex()
    records = [UserDict(id="a", h=h), UserDict(id="b", h=h), "not a record"]
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(backend="state", hash_column="h").with_outputs()

    def check(rows):
        got = sorted((tag, r.get("duplicate_of"), r.get("error")) for tag, r in rows)
        assert [g[0] for g in got] == ["duplicates", "failed", "kept"], rows
        assert got[0][1] in ("a", "b") and got[1][2] == "record is a str, expected a dict", rows

    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


@pytest.mark.parametrize("mode", [{"backend": "state"}, {"max_distance": 4}], ids=["exact", "near"])
def test_an_earlier_runs_verdict_on_a_record_is_not_carried_over(mode):
    """Records fed back from an earlier run's outputs carry its duplicate_of, distance, matched
    and error: this run's outputs say only what it decided."""
    stale = {"duplicate_of": "stale", "distance": 99, "matched": "reference", "error": "earlier failure"}
    # (and the quality the earlier run measured: a record that fails to decode now has none)
    records = [dict(r, **stale, image_quality=77) for r in make_records(seed=8)]
    p = TestPipeline()
    outputs = p | beam.Create(records, reshuffle=False) | ImagePhashDedup(**mode).with_outputs()

    def check(tagged_records):
        tags = defaultdict(list)
        for tag, r in tagged_records:
            tags[tag].append(r)
        assert all(tags[t] for t in ("kept", "duplicates", "failed")), {t: len(v) for t, v in tags.items()}
        for r in tags["kept"]:
            assert not set(stale) & set(r), r
        for r in tags["duplicates"]:
            assert r["duplicate_of"] not in (None, "stale") and r.get("matched") in (None, "input"), r
            assert r.get("distance", 0) <= 4 and r.get("error") is None, r
        for r in tags["failed"]:
            assert r["error"] != "earlier failure" and "duplicate_of" not in r, r
            assert "image_quality" not in r, r
    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


@pytest.mark.parametrize("mode", [{"backend": "state"}, {"max_distance": 4}, {"max_distance": 4, "hash_column": "h"}],
                         ids=["exact", "near", "hashes"])
def test_an_id_whose_text_is_not_utf8_is_a_failed_record_and_a_failed_reference(mode):
    """A file name that is not UTF-8 decodes to a lone surrogate (os.listdir, pathlib): such an id
    can be neither written nor encoded by Beam's coders, and stopped the run. Now the record,
    or the reference, fails with its reason; every other record is deduplicated."""
    import pathlib

    photos = [p.read_bytes() for p in PHOTOS[:3]]
    hexes = [h.hex() for h in beam_phash.hash_images(photos)]
    bad = pathlib.PurePosixPath("photo-\udcff.jpg")
    records = [{"id": i, "image": data, "h": h} for i, data, h in
               [("a", photos[0], hexes[0]), (bad, photos[1], hexes[1]), ("b", photos[1], hexes[1]),
                ("c", photos[2], hexes[2])]]
    references = [{"id": bad, "image": photos[2], "h": hexes[2]}, {"id": "r", "image": photos[0], "h": hexes[0]}]
    random.Random(4).shuffle(records)
    p = TestPipeline()
    outputs = (p | "Records" >> beam.Create(records, reshuffle=False)
               | ImagePhashDedup(**mode, reference=p | "References" >> beam.Create(references, reshuffle=False),
                                 reference_hash_column=mode.get("hash_column")).with_outputs())

    def check(rows):
        got = sorted((tag, str(r["id"]), r.get("duplicate_of"), r.get("error")) for tag, r in rows)
        assert [g[:3] for g in got] == [("duplicates", "a", "r"), ("failed", str(bad), None),
                                        ("kept", "b", None), ("kept", "c", None)], got
        assert got[1][3] == "id 'photo-\\udcff.jpg' is not UTF-8 text (it holds a lone surrogate, as a file name " \
                            "that is not UTF-8 decodes to): give ids that are", got

    def check_reference(rows):
        assert [(r["id"], r["error"].split(" text")[0]) for r in rows] == [
            ("photo-\\udcff.jpg", "id 'photo-\\udcff.jpg' is not UTF-8")], rows
    assert_that(tagged(outputs), check)
    assert_that(outputs.reference_failed, check_reference, label="CheckReferenceFailed")
    p.run().wait_until_finish()


def test_arrow_tables_and_record_batches_are_their_rows():
    """Elements that are pyarrow Tables or RecordBatches (parquetio.ReadAllFromParquetBatched's)
    are read as their rows, each one record: before, each became one failed record ("record is a
    Table"), however many images it held. (The rows are read in the hashing step both modes
    share.)"""
    import pyarrow as pa

    records = [r for r in make_records(seed=12) if isinstance(r.get("image"), bytes)]
    rows = [{"id": r["id"], "image": r["image"]} for r in records]
    table = pa.Table.from_pylist(rows[:len(rows) // 2])
    batch = pa.RecordBatch.from_pylist(rows[len(rows) // 2:-3])
    elements = [table, batch, *rows[-3:]]
    p = TestPipeline()
    outputs = p | beam.Create(elements, reshuffle=False) | ImagePhashDedup(backend="state").with_outputs()
    assert_that(tagged(outputs), check_outputs(rows))
    result = p.run()
    result.wait_until_finish()
    assert counters(result)["inputs"] == len(rows)


def test_the_transform_applied_to_the_pipeline_itself_says_so():
    """``p | ImagePhashDedup()`` raised Beam's "'PBegin' object has no attribute 'windowing'"."""
    p = TestPipeline()
    with pytest.raises(ValueError, match=r"applies to a PCollection of records \(records \| ImagePhashDedup"):
        p | ImagePhashDedup()


def test_with_outputs_unpacks_as_kept_duplicates_failed():
    records = make_records(seed=9)
    p = TestPipeline()
    outputs = p | beam.Create(records) | ImagePhashDedup(backend="state").with_outputs()
    kept, duplicates, failed = outputs  # as documented before the reference set existed
    assert (kept, duplicates, failed) == (outputs.kept, outputs.duplicates, outputs.failed)
    assert isinstance(outputs.reference_failed, beam.PCollection)
    assert_that(outputs.reference_failed, equal_to([]), label="NoReferenceFailures")
    assert_that(tagged(outputs), check_outputs(records))
    p.run().wait_until_finish()


# --- hashing overlapped with the rest of the bundle -------------------------------------------

def test_hashing_keeps_each_batch_in_its_own_window():
    """HashImages hashes a batch in the background and emits it while the next one is read (or
    in finish_bundle): each output must still carry its own input's window, and nothing may be
    left behind at the end of a bundle."""
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    from beam_phash import HashConfig, HashImages

    records = [r for r in make_records(seed=21) if not r["id"].startswith("bad")]
    assert len(records) > 20

    def window_of(item, window=beam.DoFn.WindowParam):
        yield [(h.owner, int(window.start)) for h in item]

    with TestPipeline() as p:
        hashed = (p | beam.Create(list(enumerate(records)))
                  | "Stamp" >> beam.Map(lambda ir: TimestampedValue(ir[1], ir[0] % 5 * 10))
                  | beam.WindowInto(FixedWindows(10))
                  | HashImages(HashConfig(batch_size=4)))
        pairs = hashed.hashed | beam.ParDo(window_of) | beam.FlatMap(lambda b: b)
        expected = [(r["id"], i % 5 * 10) for i, r in enumerate(records)]
        assert_that(pairs, equal_to(expected))


def test_the_state_backend_refuses_merging_windows_and_near_mode_dedups_in_them():
    """In Sessions, before a shuffle merges them, each record sits in a window of its own, and
    Beam state per key and window saw every copy as the first: four copies of one image were all
    kept. The state backend refuses them when the transform is applied; near mode runs there."""
    from apache_beam.transforms.window import Sessions, TimestampedValue

    image = PHOTOS[0].read_bytes()
    records = [{"id": f"copy-{i}", "image": image} for i in range(4)]
    p = TestPipeline()
    sessions = (p | beam.Create(records) | beam.Map(lambda r: TimestampedValue(r, int(r["id"][-1])))
                | beam.WindowInto(Sessions(30)))
    with pytest.raises(ValueError, match="merging windows .Sessions. do not support"):
        _ = sessions | ImagePhashDedup(backend="state").with_outputs()
    with TestPipeline() as p:
        sessions = (p | beam.Create(records) | beam.Map(lambda r: TimestampedValue(r, int(r["id"][-1])))
                    | beam.WindowInto(Sessions(30)))
        outputs = sessions | ImagePhashDedup(max_distance=4).with_outputs()
        assert_that(outputs.kept | "KeptIds" >> beam.Map(lambda r: r["id"]), equal_to(["copy-0"]), label="Kept")
        assert_that(outputs.duplicates | "DuplicateIds" >> beam.Map(lambda r: r["id"]),
                    equal_to(["copy-1", "copy-2", "copy-3"]), label="Duplicates")


@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_reference_on_windowed_input_keeps_each_record_in_its_window(backend, request):
    """Exact mode joins the records with the reference (one set for every window) in the global
    window: each record must still come out in its own window, the reference's copies as its
    duplicates, and the backend must decide per window (state) or across windows (Ray)."""
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    records = make_records(seed=23)
    groups, failed = oracle(records)
    group_of = {i: h for h, ids in groups.items() for i in ids}
    reference_photo = PHOTOS[1].read_bytes()
    reference_hash = beam_phash.hash_image(reference_photo).hex()
    assert len(groups[reference_hash]) > 1
    start = {r["id"]: i % 2 * 10 for i, r in enumerate(records)}

    def with_window(tag):
        def label(r, window=beam.DoFn.WindowParam):
            yield tag, r["id"], int(window.start), r.get("matched")
        return label

    def check(rows):
        assert sorted((i, w) for _, i, w, _ in rows) == sorted(start.items()), "a record lost its window"
        kept = defaultdict(list)
        for tag, i, w, matched in rows:
            if i in failed:
                assert tag == "failed", (tag, i)
            elif group_of[i] == reference_hash:
                assert (tag, matched) == ("duplicates", "reference"), (tag, i, matched)
            elif tag == "kept":
                kept[group_of[i]].append(w)
        for h, ids in groups.items():
            if h == reference_hash:
                continue
            if backend == "state":  # Beam state: one keeper per hash and window
                assert sorted(kept[h]) == sorted({start[i] for i in ids}), (h, kept[h])
            else:  # the Ray actors: one keeper per hash
                assert len(kept[h]) == 1, (h, kept[h])

    with TestPipeline() as p:
        stamped = (p | "Records" >> beam.Create(records)
                   | "Stamp" >> beam.Map(lambda r: TimestampedValue(r, start[r["id"]]))
                   | beam.WindowInto(FixedWindows(10)))
        reference = p | "Reference" >> beam.Create([{"id": "the-reference", "image": reference_photo}])
        outputs = stamped | ImagePhashDedup(backend=backend, **({"num_buckets": 3} if backend == "ray" else {})).with_reference(reference).with_outputs()
        rows = ((outputs.kept | "Kept" >> beam.ParDo(with_window("kept")),
                 outputs.duplicates | "Duplicates" >> beam.ParDo(with_window("duplicates")),
                 outputs.failed | "Failed" >> beam.ParDo(with_window("failed")))
                | beam.Flatten() | "Global" >> beam.WindowInto(beam.window.GlobalWindows()))
        assert_that(rows, check)


def test_near_mode_on_windowed_input_keeps_each_record_in_its_window():
    """Near-duplicate mode searches every window at once (in the global window). Its kept and
    duplicate records came out in the global window while the failed ones kept their own, and
    the plain output form, which flattens kept with failed, failed to run ("Invalid
    PaneInfoEncoding"). Each record now comes out in its own window, and the fates are those of
    the same records unwindowed."""
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    records = make_records(seed=29)
    random.Random(29).shuffle(records)
    start = {r["id"]: i % 3 * 10 for i, r in enumerate(records)}

    def fate(tag):
        def label(r, window=beam.DoFn.WindowParam):
            yield r["id"], tag, r.get("duplicate_of"), getattr(window, "start", None)
        return label

    def rows(outs, label):
        return ((outs.kept | f"{label}Kept" >> beam.ParDo(fate("kept")),
                 outs.duplicates | f"{label}Dups" >> beam.ParDo(fate("duplicates")),
                 outs.failed | f"{label}Failed" >> beam.ParDo(fate("failed")))
                | f"{label}All" >> beam.Flatten() | f"{label}Global" >> beam.WindowInto(beam.window.GlobalWindows()))

    def check(both):
        by_tag = {tag: list(values) for tag, values in both}
        got, want = by_tag["windowed"], by_tag["plain"]
        assert sorted((i, int(w)) for i, _, _, w in got) == sorted(start.items()), "a record lost its window"
        assert sorted(r[:3] for r in got) == sorted(r[:3] for r in want)
        assert any(tag == "duplicates" for _, tag, _, _ in got) and any(tag == "failed" for _, tag, _, _ in got)
        # The plain form (kept + failed) ran on windowed input, each record in its window.
        assert sorted(by_tag["plain form"]) == sorted((i, int(w)) for i, tag, _, w in got if tag != "duplicates")

    with TestPipeline() as p:
        plain = p | "Records" >> beam.Create(records)
        windowed = (plain | "Stamp" >> beam.Map(lambda r: TimestampedValue(r, start[r["id"]]))
                    | beam.WindowInto(FixedWindows(10)))
        unwindowed = plain | "Unwindowed" >> ImagePhashDedup(max_distance=8).with_outputs()
        outputs = windowed | "Windowed" >> ImagePhashDedup(max_distance=8).with_outputs()
        plain_form = (windowed | "PlainForm" >> ImagePhashDedup(max_distance=8)
                      | "PlainFormWindows" >> beam.ParDo(lambda r, w=beam.DoFn.WindowParam: [(r["id"], int(w.start))])
                      | "PlainFormGlobal" >> beam.WindowInto(beam.window.GlobalWindows()))
        both = ((rows(outputs, "W") | "TagW" >> beam.Map(lambda r: ("windowed", r)),
                 rows(unwindowed, "P") | "TagP" >> beam.Map(lambda r: ("plain", r)),
                 plain_form | "TagF" >> beam.Map(lambda r: ("plain form", r)))
                | "Both" >> beam.Flatten() | beam.GroupByKey())
        assert_that(both, check)


@pytest.mark.parametrize("mode", [{"backend": "state"}, {"max_distance": 4}], ids=["exact", "near"])
def test_a_windowed_reference_is_one_set_for_every_window(mode):
    """Exact mode joined a windowed reference as it came, and the join failed ("Invalid
    PaneInfoEncoding"); near mode re-windowed it. Both must match the copies of each reference,
    whatever window the reference arrived in."""
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    photos = [p.read_bytes() for p in PHOTOS[:4]]
    records = [{"id": f"in{i}", "image": b} for i, b in enumerate(photos)]
    random.Random(5).shuffle(records)
    with TestPipeline() as p:
        reference = (p | "Reference" >> beam.Create([{"id": f"r{i}", "image": photos[i], "t": 100 * i} for i in (1, 2)])
                     | "Stamp" >> beam.Map(lambda r: TimestampedValue(r, r["t"]))
                     | "Windows" >> beam.WindowInto(FixedWindows(60)))
        outputs = (p | "Records" >> beam.Create(records)) | ImagePhashDedup(**mode).with_reference(reference).with_outputs()
        assert_that(outputs.duplicates | beam.Map(lambda r: (r["id"], r["duplicate_of"], r["matched"])),
                    equal_to([("in1", "r1", "reference"), ("in2", "r2", "reference")]), label="Duplicates")
        assert_that(outputs.kept | "KeptIds" >> beam.Map(lambda r: r["id"]), equal_to(["in0", "in3"]), label="Kept")


def _stream_of(batches, windowed: bool = True):
    """An unbounded input of ``batches`` (lists of (record, timestamp)), the watermark advanced
    past each batch's window, in windows of 10 s when ``windowed``."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    stream, watermark = TestStream(), 0
    for batch in batches:
        stream = stream.add_elements([TimestampedValue(r, t) for r, t in batch])
        if max(t for _, t in batch) // 10 * 10 + 10 > watermark:
            watermark = max(t for _, t in batch) // 10 * 10 + 10
            stream = stream.advance_watermark_to(watermark)
    stream = stream.advance_watermark_to_infinity()

    def build(p):
        records = p | stream
        return records | beam.WindowInto(FixedWindows(10)) if windowed else records
    return build


def _streaming_pipeline():
    from apache_beam.options.pipeline_options import StandardOptions

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner="BundleBasedDirectRunner", options=options)


@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
def test_exact_mode_runs_on_a_stream(backend, request):
    """An unbounded input was refused when the pipeline was built (the failure check summed its
    tallies in the global window with the default trigger, and the Ray backend's barrier waited
    for an end a stream never has). Exact mode now runs on one: copies within a window are
    duplicates with either backend; a copy in a later window is one only with the Ray backend
    (Beam state is per window); an undecodable image is a failed record."""
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    a, b, c = (p.read_bytes() for p in PHOTOS[:3])
    build = _stream_of([[({"id": "a", "image": a}, 1), ({"id": "b", "image": b}, 2), ({"id": "c", "image": c}, 3)],
                        [({"id": "a-again", "image": a}, 5), ({"id": "bad", "image": b"not an image"}, 6)],
                        [({"id": "a-later", "image": a}, 16)]])
    dedup = ImagePhashDedup(backend=backend, **({"num_buckets": 2} if backend == "ray" else {})).with_outputs()
    try:
        with _streaming_pipeline() as p:
            outputs = build(p) | dedup
            later_kept = backend == "state"
            assert_that(outputs.kept | "Kept" >> beam.Map(lambda r: r["id"]),
                        equal_to(["a", "b", "c"] + (["a-later"] if later_kept else [])), label="Kept")
            assert_that(outputs.duplicates | "Duplicates" >> beam.Map(lambda r: (r["id"], r["duplicate_of"])),
                        equal_to([("a-again", "a")] + ([] if later_kept else [("a-later", "a")])), label="Duplicates")
            assert_that(outputs.failed | "Failed" >> beam.Map(lambda r: r["id"]), equal_to(["bad"]), label="Failed")
    finally:
        dedup.release()  # a stream never ends: its unnamed Ray backend is released by its owner
    if backend == "ray":
        assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("run-")]


def test_the_failure_threshold_is_checked_on_a_stream():
    """On a stream the running totals are checked as each batch's tally arrives: 2 of 3 inputs
    undecodable is over a threshold of 0.5."""
    build = _stream_of([[({"id": "a", "image": PHOTOS[0].read_bytes()}, 1), ({"id": "x", "image": b"x"}, 2),
                         ({"id": "y", "image": b"y"}, 3)]], windowed=False)
    with pytest.raises(Exception, match="2 of 3 inputs"):
        with _streaming_pipeline() as p:
            _ = build(p) | ImagePhashDedup(backend="state").with_failure_threshold(decode=0.5)


def test_a_stream_is_not_failed_by_its_first_few_inputs():
    """A stream's first batch held 1 undecodable input of 1: 100% over a threshold of 10%, and
    the job failed, where the same 20 inputs as a bounded input (1 in 20) pass. A threshold is
    now checked once the running totals count 1 / threshold inputs."""
    photo = PHOTOS[0].read_bytes()
    build = _stream_of([[({"id": "x", "image": b"x"}, 1)],
                        [({"id": f"p{i}", "image": photo}, 2) for i in range(19)]], windowed=False)
    with _streaming_pipeline() as p:
        outputs = build(p) | ImagePhashDedup(backend="state").with_failure_threshold(decode=0.1).with_outputs()
        assert_that(outputs.failed | beam.Map(lambda r: r["id"]), equal_to(["x"]))


@pytest.mark.ray
def test_releasing_a_streams_backend_snapshots_its_state(ray_cluster, tmp_path):
    """A stream's unnamed Ray backend is released by its owner, not by the pipeline's end: its
    state_dir must then be snapshotted, as a bounded run's end does, not left in the logs."""
    state = tmp_path / "state"
    build = _stream_of([[({"id": "a", "image": PHOTOS[0].read_bytes()}, 1)]])
    dedup = ImagePhashDedup(num_buckets=2, state_dir=str(state)).with_outputs()
    try:
        with _streaming_pipeline() as p:
            _ = build(p) | dedup
        before = set(state.rglob("snapshot-*.parquet"))  # the buckets' first ones, empty
    finally:
        dedup.release()
    assert len(set(state.rglob("snapshot-*.parquet")) - before) == 2  # one new one per bucket


@pytest.mark.parametrize("mode", ["near", "reference"])
def test_what_needs_a_bounded_input_refuses_a_stream_by_name(mode):
    """Near-duplicate mode and exact mode's reference join read their whole input; on a stream
    they failed with Beam's GroupByKey error, which names none of their settings."""
    build = _stream_of([[({"id": "a", "image": PHOTOS[0].read_bytes()}, 1)]])
    p = _streaming_pipeline()
    dedup = ImagePhashDedup(max_distance=8) if mode == "near" else ImagePhashDedup(backend="state").with_reference(
        p | beam.Create([{"id": "r", "image": PHOTOS[1].read_bytes()}]))
    with pytest.raises(ValueError, match="needs a bounded input, and this one is unbounded"):
        _ = build(p) | dedup


@pytest.mark.parametrize("hash_column", [None, "h"], ids=["images", "hashes"])
def test_a_reference_table_without_its_column_fails_as_dict_references_do(hash_column):
    """A pyarrow reference without the image (or hash) column stopped the pipeline with a
    KeyError, where a dict reference without the field is a failed reference with a reason."""
    import pyarrow as pa

    with TestPipeline() as p:
        records = p | "Records" >> beam.Create([{"id": "in0", "image": PHOTOS[0].read_bytes()}])
        as_table = p | "Table" >> beam.Create([pa.table({"id": ["t1"], "jpg": [b"\xff\xd8"]})])
        as_dicts = p | "Dicts" >> beam.Create([{"id": "d1", "jpg": b"\xff\xd8"}])
        failed = []
        for name, reference in (("table", as_table), ("dicts", as_dicts)):
            outputs = records | f"Dedup{name}" >> ImagePhashDedup(max_distance=4).with_reference(
                reference, hash_column=hash_column).with_outputs()
            failed.append(outputs.reference_failed | f"Reason{name}" >> beam.Map(lambda r: r["error"]))
        reasons = failed[0] | beam.Map(lambda e: ("table", e))
        expected = failed[1] | "AsTable" >> beam.Map(lambda e: ("table", e))
        both = ((reasons, expected) | beam.Flatten() | beam.combiners.Count.PerElement()
                | beam.Map(lambda kv: kv[1]))
        assert_that(both, equal_to([2]))


@pytest.mark.parametrize("mode", [{"backend": "state"}, {"max_distance": 4}], ids=["exact", "near"])
def test_a_reference_table_of_another_hash_version_fails_row_by_row(mode):
    """A pyarrow reference read from an earlier run's kept/ output carries how its hashes were
    made in its schema. Hashes of another hash version (or algorithm, or size) have the same width
    and would be compared as if they were this build's: every row fails with the reason instead,
    and the records it would have matched stay kept. The same table saying this version matches."""
    import json

    import pyarrow as pa

    from beam_phash._native import HASH_VERSION
    from beam_phash.hashed_as import HASHED_AS

    photo = PHOTOS[0].read_bytes()
    (h,) = beam_phash.hash_images([photo], hash_size=16)

    def table(version):
        said = json.dumps({"field": "h", "algorithm": "phash", "hash_size": 16, "hash_version": version})
        return pa.table({"id": ["r0", "r1"], "h": [h.hex(), h.hex()]}).replace_schema_metadata({HASHED_AS: said})

    with TestPipeline() as p:
        records = p | "Records" >> beam.Create([{"id": "in0", "image": photo}])
        for name, version in (("Old", HASH_VERSION - 1), ("Now", HASH_VERSION)):
            reference = p | f"Reference{name}" >> beam.Create([table(version)])
            outputs = records | f"Dedup{name}" >> ImagePhashDedup(hash_size=16, **mode).with_reference(
                reference, hash_column="h").with_outputs()
            old = name == "Old"
            assert_that(outputs.reference_failed | f"Failed{name}" >> beam.Map(lambda r: (r["id"], r["error"])),
                        equal_to([(r, f"h: phash 16 hashes of hash version {HASH_VERSION - 1} (its schema metadata "
                                      f"says so), where this run makes phash 16 hashes of version {HASH_VERSION}: "
                                      "hash the images again with this version") for r in ("r0", "r1")] if old else []),
                        label=f"CheckFailed{name}")
            assert_that(outputs.kept | f"Kept{name}" >> beam.Map(lambda r: r["id"]),
                        equal_to(["in0"] if old else []), label=f"CheckKept{name}")


def test_without_ray_s_private_api_the_embedded_ray_starts_with_ray_init(tmp_path):
    """When a Ray upgrade moves the API of the lean start, the embedded Ray is started with
    ray.init() before its address is handed out, and the pipeline runs on it."""
    out = _job_on_embedded_ray(tmp_path, before="""
        def moved(*args, **kwargs):
            raise ImportError("ray._private.node moved")
        ray_private.lean_head_params = moved
    """, after="""
        print("HEAD", ray_cluster._head)
    """)
    assert "HEAD None" in out.stdout, out.stdout
    assert "the lean start is unavailable (ImportError: ray._private.node moved)" in out.stderr


# --- the parts, composed by hand -------------------------------------------------------------

def _hashed_at_16():
    records = [r for r in make_records(seed=9) if not r["id"].startswith("bad")]
    return records, beam_phash.HashConfig(hash_size=16)


@pytest.mark.parametrize("dedup", [
    lambda: beam_phash.ExactDedup(beam_phash.StateBackend(), beam_phash.HashConfig(hash_size=8)),
    lambda: beam_phash.NearDedup(beam_phash.NearConfig(max_distance=8), beam_phash.HashConfig(hash_size=8)),
    lambda: beam_phash.NearDedup(beam_phash.NearConfig(max_distance=8), beam_phash.HashConfig(dihedral=True)),
], ids=["exact-size", "near-size", "near-dihedral"])
def test_a_dedup_part_refuses_hashes_of_another_config(dedup):
    """ExactDedup and NearDedup given another HashConfig than the records were hashed with: the
    run fails naming the mismatch (a near search over the first 64 of 256 bits merged photos
    98 bits apart, silently)."""
    records, hashing = _hashed_at_16()
    p = TestPipeline()
    hashed, _ = p | beam.Create(records) | beam_phash.HashImages(hashing)
    _ = hashed | dedup()
    with pytest.raises(Exception, match="was built for .*-byte hashes.* give it the HashConfig the records were hashed with"):
        p.run().wait_until_finish()


def test_exact_dedup_on_ray_without_a_config_refuses_hashes_of_two_widths():
    """Without a HashConfig, ExactDedup takes hashes of any one width. Hashes of two widths
    failed in numpy ("cannot reshape array of size 480 into shape (24,8)"); the claiming step now
    says what is wrong before it packs a claim (no Ray is reached: the claims are not sent yet)."""
    from beam_phash.exact.ray_dofns import RayDedupDoFn
    from beam_phash.records import Hashed

    dofn = RayDedupDoFn(None, claim_batch=1000)
    dofn.start_bundle()
    assert list(dofn.process([Hashed(b"\x01" * 32, "a", {}), Hashed(b"\x02" * 32, "b", {})])) == []
    with pytest.raises(ValueError, match="one width, and received 32-byte and 8-byte hashes .id 'c'.*HashConfig"):
        list(dofn.process([Hashed(b"\x03" * 32, "d", {}), Hashed(b"\x04" * 8, "c", {})]))


def test_the_parts_refuse_what_is_not_their_config(tmp_path):
    with pytest.raises(ValueError, match="needs hashing="):
        beam_phash.ExactDedup(beam_phash.RayBackend(state_dir=str(tmp_path / "s")))
    with pytest.raises(ValueError, match="hashing must be the HashConfig"):
        beam_phash.NearDedup(beam_phash.NearConfig(), {"hash_size": 8})
    with pytest.raises(ValueError, match="hashing must be the HashConfig"):
        beam_phash.ExactDedup(beam_phash.StateBackend(), "dhash")
    with pytest.raises(ValueError, match="config must be a HashConfig"):
        beam_phash.HashImages({"hash_size": 8})
    with pytest.raises(ValueError, match="failure_threshold must be a FailureThreshold"):
        beam_phash.HashImages(beam_phash.HashConfig(), failure_threshold=0.1)
    # Exact mode refuses what only the band search reads, as it refuses keep.
    for option in ({"search_partitions": 8}, {"band_partition_bits": 2}, {"expected_count": 1000}):
        with pytest.raises(ValueError, match="appl(ies|y) to near-duplicate dedup"):
            ImagePhashDedup(**option)
        ImagePhashDedup(max_distance=8, **option)


def test_exact_dedup_by_hand_matches_the_oracle_and_pins_its_state(tmp_path):
    """HashImages then ExactDedup with the same HashConfig: the oracle's kept set; a Ray state
    directory pins the hashing given (dhash here), not a default."""
    records, _ = _hashed_at_16()
    hashing = beam_phash.HashConfig(algorithm="dhash", hash_size=8)
    expected = sorted({r["id"] for r in records} - {r["id"] for r in _exact_duplicates(records, hashing)})
    with TestPipeline() as p:
        hashed, _ = p | beam.Create(records) | beam_phash.HashImages(hashing)
        kept, _ = hashed | beam_phash.ExactDedup(beam_phash.StateBackend(), hashing)
        assert_that(kept | beam.Map(lambda r: r["id"]), equal_to(expected))
    state = str(tmp_path / "state")
    dedup = beam_phash.ExactDedup(beam_phash.RayBackend(num_buckets=2, state_dir=state), hashing)
    from beam_phash.exact.store import prepare_state_dir
    prepare_state_dir(state, 2, dedup.hashing.algorithm, dedup.hashing.hash_size)
    with pytest.raises(ValueError, match="algorithm='dhash'"):
        beam_phash.ExactDedup(beam_phash.RayBackend(num_buckets=2, state_dir=state), beam_phash.HashConfig(hash_size=8))


def _exact_duplicates(records, hashing):
    """The records a first-seen exact dedup drops, whatever the order: all but one per hash."""
    by_hash = defaultdict(list)
    for r in records:
        image = r["image"]["bytes"] if isinstance(r["image"], dict) else bytes(r["image"])
        by_hash[bytes(beam_phash.hash_image(image, hash_size=hashing.hash_size, algorithm=hashing.algorithm))].append(r)
    return [r for group in by_hash.values() for r in group[1:]]


def test_a_deferred_commit_is_applied_once_per_application_with_steps_of_its_pipeline():
    """``with_deferred_commit()``: ``commit()`` before the transform is applied, a second time,
    with steps of two pipelines, or on a transform that commits by itself, is a clear error;
    each application (here in two pipelines) gets its own."""
    from beam_phash import ExactDedup, HashConfig, StateBackend

    hashing = HashConfig()
    with pytest.raises(ValueError, match="built with with_deferred_commit"):
        ExactDedup(StateBackend(), hashing).commit()
    dedup = ExactDedup(StateBackend(), hashing).with_deferred_commit()
    with pytest.raises(ValueError, match="once it is applied"):
        dedup.commit()
    p1, p2 = beam.Pipeline(), beam.Pipeline()
    steps = [p | beam.Create([[]]) for p in (p1, p2)]
    for step in steps:
        _ = step | dedup
    with pytest.raises(ValueError, match="steps of one pipeline"):
        dedup.commit(*steps)
    dedup.commit(steps[0])
    with pytest.raises(ValueError, match="once per application"):
        dedup.commit(steps[0])
    dedup.commit(steps[1])
    # Another deferred copy has its own application to commit.
    other = ExactDedup(StateBackend(), hashing).with_deferred_commit()
    _ = steps[0] | "Again" >> other
    other.commit()


@pytest.mark.ray
def test_one_deferred_transform_applied_twice_in_a_pipeline_commits_each(ray_cluster):
    """Each commit() applies one application's end, under a label of its own: the first took both
    ends and applied them under one label ("CommitDedup" already exists), whatever label was given.
    Each end waits for the writes of its own application's outputs, in whatever order the
    commits come."""
    from apache_beam.pipeline import PipelineVisitor

    from beam_phash.run_end import _upstream

    records = make_records(seed=31)
    parts = (records[:14], records[14:])
    dedup = ImagePhashDedup(num_buckets=2).with_deferred_commit().with_outputs()
    with TestPipeline() as p:
        inputs = [p | f"Part{i}" >> beam.Create(part) for i, part in enumerate(parts)]
        outs = [part | f"Dedup{i}" >> dedup for i, part in enumerate(inputs)]
        written = [o.kept | f"Write{i}" >> beam.Map(lambda r: r["id"]) for i, o in enumerate(outs)]
        dedup.commit(written[1])  # the second application's writes first
        dedup.commit(written[0])
        with pytest.raises(ValueError, match="once per application"):
            dedup.commit(written[0])

        class Ends(PipelineVisitor):
            found: dict = {}

            def enter_composite_transform(self, node):
                if node.full_label in ("CommitDedup", "CommitDedup2"):
                    self.found[node.full_label] = _upstream(list(node.outputs.values()))

        p.visit(Ends())
        first, second = Ends.found["CommitDedup"], Ends.found["CommitDedup2"]
        # An end comes from its application's records and waits for the writes: one part only.
        assert id(written[1]) in first and id(inputs[0]) not in first
        assert id(written[0]) in second and id(inputs[1]) not in second
        for i, (out, part) in enumerate(zip(outs, parts)):  # two runs, each on its own backend
            groups, _ = oracle(part)
            assert_that(out.kept | f"Hashes{i}" >> beam.Map(lambda r: r["image_phash"]), equal_to(sorted(groups)),
                        label=f"Kept{i}")
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("run-")]
    assert left == [], "an application's backend was not released by its commit"


@pytest.mark.parametrize("mode", [{"max_distance": 4}, pytest.param({"backend": "ray", "num_buckets": 2}, marks=pytest.mark.ray)],
                         ids=["near", "ray"])
def test_one_state_directory_for_two_steps_of_a_pipeline_is_refused_when_built(mode, tmp_path, request):
    """Two dedup steps of one pipeline on one state directory: the run failed at the second
    commit (near mode: "another run committed to it", after the first had landed; Ray: "in use
    by another backend"). It is refused while the pipeline is built; another pipeline may use it."""
    if mode.get("backend") == "ray":
        request.getfixturevalue("ray_cluster")
    state = str(tmp_path / "state")
    p = beam.Pipeline()
    records = p | beam.Create(make_records(seed=32))
    first = ImagePhashDedup(state_dir=state, **mode)
    _ = records | "First" >> first
    with pytest.raises(ValueError, match="already used by another dedup step of this pipeline"):
        _ = records | "Second" >> ImagePhashDedup(state_dir=state, **mode)
    other = beam.Pipeline()
    again = ImagePhashDedup(state_dir=state, **mode)
    _ = other | beam.Create(make_records(seed=32)) | again
    if mode.get("backend") == "ray":  # neither pipeline runs: their one-run actors are released here
        first.release()
        again.release()
