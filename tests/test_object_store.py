"""The job on an S3 object store: moto's S3 server, started on 127.0.0.1 for the module.

Beam's S3 filesystem takes its endpoint and keys from the pipeline options, and cannot complete
an empty file (a multipart upload of no parts), as on AWS itself. The job lists its inputs and
probes its output before the pipeline exists, and its report writes a file per kind of row,
some of them with no rows; each of these failed on S3 until handled."""
from __future__ import annotations

import io
import json
import re
import socket
import tarfile

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from conftest import PHOTOS
from pipelines import dedup_images
from test_webdataset import write_tar

KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(endpoint, request):
    client = boto3.client("s3", endpoint_url=endpoint, **KEYS)
    name = re.sub("[^a-z0-9]+", "-", request.node.name.lower())[:63].strip("-")  # a bucket's name
    client.create_bucket(Bucket=name)
    return client, name


def options(endpoint) -> list[str]:
    return ["--s3_endpoint_url", endpoint, "--s3_access_key_id", KEYS["aws_access_key_id"],
            "--s3_secret_access_key", KEYS["aws_secret_access_key"], "--s3_region_name", KEYS["region_name"]]


def keys(client, name: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix=prefix).get("Contents", []))


def rows(client, name: str, key: str) -> list[dict]:
    return pq.read_table(io.BytesIO(client.get_object(Bucket=name, Key=key)["Body"].read())).to_pylist()


@pytest.mark.parametrize("given", ["in/*", "in"], ids=["glob", "folder"])
def test_files_on_s3_in_and_out_with_the_report(bucket, endpoint, given, capsys):
    """Given as a glob, or as a folder without its trailing '/' (which matched no files: no
    object has that name). The output folder given back as an input or a reference is refused,
    however it is spelt (a dot in its name once kept it from being looked into)."""
    client, name = bucket
    for p in PHOTOS[:3]:
        client.put_object(Bucket=name, Key=f"in/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket=name, Key="in/zz_copy.jpg", Body=PHOTOS[0].read_bytes())
    # uploaded from a Mac: its hidden companions are passed over, as in a local folder
    client.put_object(Bucket=name, Key="in/._zz_copy.jpg", Body=b"\x00\x05\x16\x07" + bytes(100))
    client.put_object(Bucket=name, Key="in/.DS_Store", Body=b"\x00\x00\x00\x01Bud1")
    out = f"s3://{name}/out"
    assert dedup_images.main(["--input", f"s3://{name}/{given}", "--output", out] + options(endpoint)) == 0
    assert "--input passed over 2 hidden files (" in capsys.readouterr().err
    written = keys(client, name, "out/")
    assert {"out/summary.json", "out/report.html", "out/kept/part-00000-of-00001.parquet"} <= set(written), written
    summary = json.loads(client.get_object(Bucket=name, Key="out/summary.json")["Body"].read())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (4, 3, 1, 0)
    assert summary["hidden_files"] == 2
    kept = {r["id"] for r in rows(client, name, "out/kept/part-00000-of-00001.parquet")}
    assert kept == {f"s3://{name}/in/{p.name}" for p in PHOTOS[:3]}
    (dup,) = rows(client, name, "out/duplicates/part-00000-of-00001.parquet")
    assert (dup["id"], dup["duplicate_of"]) == (f"s3://{name}/in/zz_copy.jpg", f"s3://{name}/in/{PHOTOS[0].name}")
    # No failures and no matches of a reference: those rows' files are not written.
    assert not [k for k in written if k.startswith(("out/report/failures", "out/report/matches"))], written
    if given != "in":
        return
    for key in written:
        client.copy_object(Bucket=name, Key="run.1/" + key[len("out/"):], CopySource={"Bucket": name, "Key": key})
    capsys.readouterr()
    for flag, folder in (("--input", "out"), ("--input", "out/"), ("--input", "run.1"), ("--reference", "run.1")):
        argv = [flag, f"s3://{name}/{folder}", "--output", f"s3://{name}/again"] + options(endpoint)
        assert dedup_images.main(argv + (["--input", f"s3://{name}/in"] if flag == "--reference" else [])) == 2
        err = capsys.readouterr().err
        assert f"{flag} 's3://{name}/{folder}' is an earlier run's output folder" in err, err
    assert not keys(client, name, "again")


def test_webdataset_shards_on_s3_near_duplicates_and_written_shards(bucket, endpoint):
    client, name = bucket
    shard = io.BytesIO()
    write_tar(None, [(f"{i:05d}{p.suffix}", p.read_bytes()) for i, p in enumerate([*PHOTOS[:3], PHOTOS[0]])],
              fileobj=shard)
    client.put_object(Bucket=name, Key="wds/00000.tar", Body=shard.getvalue())
    args = ["--input", f"s3://{name}/wds/", "--input-format", "webdataset", "--output", f"s3://{name}/out",
            "--write-shards", f"s3://{name}/shards", "--max-distance", "auto"]
    assert dedup_images.main(args + options(endpoint)) == 0
    summary = json.loads(client.get_object(Bucket=name, Key="out/summary.json")["Body"].read())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (4, 3, 1, 0)
    written = client.get_object(Bucket=name, Key="shards/00000.tar")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(written)) as tar:
        stems = sorted(m.name.split(".")[0] for m in tar.getmembers() if m.isfile())
    assert stems == ["00000", "00001", "00002"], stems


def test_hugging_face_rows_that_hold_only_a_path_on_s3(bucket, endpoint):
    """A Parquet file on S3 whose Image rows hold only a path: a relative one is read from the
    Parquet file's folder on S3, an s3:// URI as it is, a missing one fails saying which."""
    client, name = bucket
    client.put_object(Bucket=name, Key="data/images/a.jpg", Body=PHOTOS[0].read_bytes())
    client.put_object(Bucket=name, Key="elsewhere/b.jpg", Body=PHOTOS[0].read_bytes())
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": None, "path": "images/a.jpg"},
                                         {"bytes": None, "path": f"s3://{name}/elsewhere/b.jpg"},
                                         {"bytes": None, "path": "images/gone.jpg"}], kind)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    client.put_object(Bucket=name, Key="data/train.parquet", Body=buf.getvalue())
    out = f"s3://{name}/out"
    assert dedup_images.main(["--input", f"s3://{name}/data", "--input-format", "parquet", "--output", out,
                              "--backend", "state", "--no-report"] + options(endpoint)) == 0
    summary = json.loads(client.get_object(Bucket=name, Key="out/summary.json")["Body"].read())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (3, 1, 1, 1)
    (failed,) = rows(client, name, "out/failed/part-00000-of-00001.parquet")
    assert failed["id"] == f"s3://{name}/data/train.parquet#2"
    assert f"(in the Parquet file's folder: s3://{name}/data/images/gone.jpg) cannot be read" in failed["error"]
