"""The main job on other runners and clusters, checked against the DirectRunner's output:
* FlinkRunner on a local Flink through Beam's portable Flink job server (LOOPBACK workers),
  with both backends, and near-duplicate dedup (which must give the very same result);
* the Ray backend on a Ray head started separately with `ray start --head` on 127.0.0.1;
* Beam's BundleBasedDirectRunner.
Each test starts its server itself and stops it."""
import json
import os
import pathlib
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, buckets
from job_outputs import basename, normalized

JOB_SERVER = ROOT / "deploy" / "flink-job-server"
JOB_SERVER_JAR = JOB_SERVER / "target" / "beam-flink-job-server.jar"


def run_job(out, *args, env=None, timeout=600):
    """The CLI in its own process, as a user runs it (in `env`, default this environment)."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=os.environ if env is None else env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "(adds up)" in proc.stdout, proc.stdout
    # Only the job's own lines reach the terminal: Beam's stop of the Flink job server and of
    # the LOOPBACK workers at exit ("Really destroying service ...") goes to the log.
    others = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("beam-phash:")]
    assert not others, others[:5]
    return proc


@pytest.fixture(scope="module")
def direct_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("direct") / "out"
    run_job(out, "--backend", "state")
    return normalized(out)


@pytest.fixture(scope="module")
def flink_job_server_jar():
    """Assembled from Maven Central with mvn (see deploy/flink-job-server/pom.xml)."""
    if not JOB_SERVER_JAR.exists():
        subprocess.run(["mvn", "-B", "-q", "-f", str(JOB_SERVER / "pom.xml"), "package"],
                       check=True, timeout=900)
    return JOB_SERVER_JAR


def _java_processes():
    out = subprocess.run(["pgrep", "-f", "FlinkJobServerDriver|beam-flink-job-server"],
                         capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.mark.flink
@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
def test_flink_runner_matches_the_direct_runner(tmp_path, flink_job_server_jar, direct_output, backend):
    before = _java_processes()
    out = tmp_path / "out"
    run_job(out, "--backend", backend, *buckets(backend),
            "--runner", "FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}",
            "--environment_type=LOOPBACK", "--flink_master=[local]", "--parallelism=2")
    assert normalized(out) == direct_output
    assert (out / "report.html").exists()
    assert _java_processes() <= before, "the Flink job server outlived the job"


@pytest.mark.flink
def test_near_duplicates_on_flink_equal_the_direct_runner(tmp_path, flink_job_server_jar):
    """Near-duplicate dedup is deterministic: the same kept set, duplicate_of and distances on
    Flink with parallelism 2 as on the DirectRunner."""
    from job_outputs import read
    from test_near_dup import make_near_dup_records

    folder = tmp_path / "in"
    folder.mkdir()
    for r in make_near_dup_records(6):
        if isinstance(r.get("image"), bytes):
            (folder / f"{r['id']}.img").write_bytes(r["image"])
    args = ["--input", str(folder), "--max-distance", "14", "--dihedral", "--no-report"]

    def outcome(out):
        return ({r["id"] for r in read(out, "kept")},
                {(r["id"], r["duplicate_of"], r["distance"]) for r in read(out, "duplicates")})

    run_job(tmp_path / "direct", *args)
    run_job(tmp_path / "flink", *args, "--runner", "FlinkRunner",
            f"--flink_job_server_jar={flink_job_server_jar}", "--environment_type=LOOPBACK",
            "--flink_master=[local]", "--parallelism=2")
    direct = outcome(tmp_path / "direct")
    assert direct[1] and any(d > 0 for _, _, d in direct[1])
    assert outcome(tmp_path / "flink") == direct


@pytest.mark.flink
def test_hash_column_on_flink_equals_the_direct_runner(tmp_path, flink_job_server_jar):
    """--hash-column with band partitions (--band-partition-bits 2): Flink with parallelism 2
    gives the DirectRunner's result, which is the brute-force oracle's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from job_outputs import read
    from test_near_dup import hex_oracle, hex_records

    records = hex_records(8, n=600)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": [r["id"] for r in records], "h": [r.get("h") for r in records]}),
                   src / "hashes.parquet")
    args = ["--input", str(src), "--input-format", "parquet", "--hash-column", "h", "--max-distance", "16",
            "--band-partition-bits", "2", "--no-report"]

    def outcome(out):
        return ({r["id"]: None for r in read(out, "kept")}
                | {r["id"]: (r["duplicate_of"], r["distance"]) for r in read(out, "duplicates")})

    run_job(tmp_path / "direct", *args)
    run_job(tmp_path / "flink", *args, "--runner", "FlinkRunner",
            f"--flink_job_server_jar={flink_job_server_jar}", "--environment_type=LOOPBACK",
            "--flink_master=[local]", "--parallelism=2")
    expected, _ = hex_oracle(records, 16)
    assert outcome(tmp_path / "direct") == expected
    assert outcome(tmp_path / "flink") == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head` on 127.0.0.1, in its own process group so that exactly its processes
    are stopped afterwards (`ray stop` would stop every Ray on the machine). Its files go to a
    temporary folder of its own (TMPDIR): `ray start` writes its address to $TMPDIR/ray, where
    `ray_address="auto"` would find it after the head is gone."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TMPDIR": temp}
    head = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
         "--num-cpus=1", "--disable-usage-stats"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(head.pid)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            if not _live_members(pgid):
                return
            time.sleep(0.5)
    assert not _live_members(pgid), "Ray head processes survived SIGKILL"


def _live_members(pgid: int):
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if line.split()[1] == str(pgid) and not line.split()[2].startswith("Z")]


@pytest.mark.ray
def test_ray_backend_on_a_separately_started_cluster(tmp_path, ray_head, direct_output):
    """The job connects by address. The head enables token auth when ~/.ray/auth_token exists;
    the client must join without RAY_AUTH_MODE being set by the user."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    out = tmp_path / "out"
    run_job(out, "--backend", "ray", "--ray-address", ray_head, "--num-buckets", "2",
            "--direct_num_workers=2", "--direct_running_mode=multi_processing", env=env)
    assert normalized(out) == direct_output


def test_bundle_based_direct_runner_matches_the_direct_runner(tmp_path, direct_output):
    """Beam's other in-process runner, with the report (its failures list included)."""
    out = tmp_path / "out"
    run_job(out, "--backend", "state", "--runner", "BundleBasedDirectRunner")
    assert normalized(out) == direct_output
    listed = [json.loads(line)["id"] for f in sorted(out.glob("report/failures*.jsonl"))
              for line in f.read_text().splitlines()]
    assert sorted(map(basename, listed)) == sorted(direct_output["failed"]) and listed
    assert (out / "report.html").exists()


def test_unreachable_ray_address_fails_fast(tmp_path):
    port = _free_port()  # nobody listens there
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(tmp_path / "o"),
                           "--ray-address", f"127.0.0.1:{port}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert time.time() - started < 120


def test_ray_address_auto_fails_fast_on_a_stale_address_file(tmp_path):
    """`ray start` leaves its address in a file that outlives a cluster stopped without `ray
    stop`; ray.init(address="auto") retried it for minutes. The job checks it first."""
    port = _free_port()  # nobody listens there
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(tmp_path / "o"),
                           "--ray-address", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "TMPDIR": str(tmp_path)})
    assert proc.returncode != 0
    assert (f"cannot reach the Ray cluster at 127.0.0.1:{port} (ray_address='auto' found it in the address "
            "file of the last `ray start`)") in proc.stderr, proc.stderr[-2000:]
    assert time.time() - started < 120


@pytest.mark.flink
def test_webdataset_shards_on_flink_equal_the_direct_runner(tmp_path, flink_job_server_jar):
    """Shards on Flink (parallelism 2): the same groups and failed records as on the default
    runner, the repeated keys found by the pipeline's pre-pass (more shards than the launcher
    checks itself), and --write-shards holding exactly the kept samples."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from job_outputs import read
    from pipelines import webdataset_read
    from test_webdataset import make_bad_shards, read_back_with_webdataset, write_tar

    src, good, failures = make_bad_shards(tmp_path)
    for i in range(webdataset_read.LOCAL_KEY_CHECK_SHARDS):  # past the launcher's own key check
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), (i * 3 % 256, 90, 200 - i)).save(buf, "PNG")
        write_tar(src / f"x{i:03d}.tar", [(f"x{i}.png", buf.getvalue()), (f"x{i}.txt", b"%d" % i)])
    write_tar(src / "y.tar", [("u0.jpg", b"same key as a sample of c.tar")])  # a key repeated across shards
    args = ["--input", str(src), "--input-format", "webdataset", "--backend", "state", "--no-report"]

    def outcome(out, shards):
        kept, dups = read(out, "kept"), read(out, "duplicates")
        groups = {}
        for r in kept + dups:
            groups.setdefault(r["image_phash"], set()).add(r["key"])
        assert sorted(r["image_phash"] for r in kept) == sorted(groups)  # one keeper per group
        assert set(read_back_with_webdataset(shards)) == {r["key"] for r in kept}
        assert sorted(pq.read_table(str(shards / "kept_keys")).column("key").to_pylist()) == sorted(
            r["key"] for r in kept)
        failed = sorted((r["key"], r["shard"].rsplit("/", 1)[-1], r["error"]) for r in read(out, "failed"))
        return {k: frozenset(v) for k, v in groups.items()}, failed

    run_job(tmp_path / "direct", *args, "--write-shards", str(tmp_path / "direct-shards"))
    run_job(tmp_path / "flink", *args, "--write-shards", str(tmp_path / "flink-shards"),
            "--runner", "FlinkRunner", f"--flink_job_server_jar={flink_job_server_jar}",
            "--environment_type=LOOPBACK", "--flink_master=[local]", "--parallelism=2")
    direct = outcome(tmp_path / "direct", tmp_path / "direct-shards")
    assert ("u0", "y.tar") in {(k, s) for k, s, _ in direct[1]}  # the repeat in y.tar is failed
    assert len(direct[1]) == len(failures) + 1
    assert outcome(tmp_path / "flink", tmp_path / "flink-shards") == direct
