"""WebDataset shards and img2dataset output: reading (``--input-format webdataset``, img2dataset
Parquet as it is), writing (``--write-shards``), bad input as failed records, and the real
clients: img2dataset downloads from a local HTTP server, the ``webdataset`` library reads our
shards back."""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import DATA, PHOTOS, buckets
from job_outputs import read
from pipelines import dedup_images, inputs, output_directory, webdataset_read
from pipelines.webdataset_read import split_name
from pipelines.webdataset_write import FinalizeShardsDoFn, Part, _PartWriter, plan, sample_members

STATE = ["--backend", "state"]


def write_tar(path, members, mode="w", **kwargs):
    """A tar of ``(name, bytes)`` members, written with the standard library (not our writer)."""
    with tarfile.open(path, mode, **kwargs) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def tar_members(path) -> dict:
    """``{name: bytes}`` of a tar (standard library)."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def samples_of(members: dict) -> dict:
    """``{key: {suffix: bytes}}``, grouped the WebDataset way."""
    out: dict = {}
    for name, data in members.items():
        key, suffix = split_name(name)
        out.setdefault(key, {})[suffix] = data
    return out


def read_back_with_webdataset(directory) -> dict:
    """Our shards, read by the ``webdataset`` library: ``{key: {suffix: bytes}}``."""
    import webdataset as wds

    urls = sorted(glob.glob(f"{directory}/*.tar"))
    assert urls, f"no shards in {directory}"
    out = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        assert key not in out, f"sample {key} written twice"
        out[key] = {k: v for k, v in sample.items() if not k.startswith("__")}
    return out


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def jpeg(image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", **kwargs)
    return buf.getvalue()


# --- bad input: every problem a failed record naming the shard and the sample --------------------

@pytest.fixture()
def bad_shards(tmp_path):
    return make_bad_shards(tmp_path)


def make_bad_shards(tmp_path):
    """Five shards: a (good samples, one without image, one with only an unknown suffix, one with
    an unknown extra member, one whose image member is empty), b (repeats a key of a), c (cut inside its third sample), d (not a
    tar), e (cut between two samples: the first fails, as it may have lost members). Returns (dir, {key: members} of the samples that must be read, expected failures)."""
    src = tmp_path / "shards"
    src.mkdir()
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    meta = lambda k: json.dumps({"key": k}).encode()  # noqa: E731
    a = [("s0.jpg", photo["pool.jpg"]), ("s0.txt", b"a pool"), ("s0.json", meta("s0")),
         ("s1.png", photo["chelsea.png"]), ("s1.txt", b"a cat"),
         ("s2.txt", b"only a caption"), ("s2.json", meta("s2")),                # no image
         ("s3.tiff", b"II*\x00 not handled"), ("s3.txt", b"tiff"),              # unknown suffix only
         ("s4.jpg", photo["snow.jpg"]), ("s4.seg.xyz", b"\x00\x01 extra"),      # unknown extra member
         ("s5.jpg", photo["pool.jpg"]),                                         # a duplicate of s0
         ("s6.jpg", b""), ("s6.txt", b"empty image")]                           # an empty image member
    b = [("s0.jpg", photo["coffee.png"]), ("s0.txt", b"same key, other shard"),  # repeated key
         ("t0.jpeg", photo["sunset.jpg"]), ("t0.json", meta("t0"))]
    c_full = [("u0.jpg", photo["skagen.jpg"]), ("u1.jpg", photo["jesper.jpg"]), ("u1.txt", b"u1"),
              ("u2.jpg", photo["grace_hopper.jpg"]), ("u3.jpg", photo["grand_canyon_1.jpg"])]
    write_tar(src / "a.tar", a)
    write_tar(src / "b.tar", b)
    write_tar(tmp_path / "c_full.tar", c_full)
    full = (tmp_path / "c_full.tar").read_bytes()
    # Cut in the middle of u2.jpg's data.
    with tarfile.open(tmp_path / "c_full.tar") as t:
        u2 = t.getmember("u2.jpg")
    (src / "c.tar").write_bytes(full[: u2.offset_data + u2.size // 2])
    (src / "d.tar").write_bytes(b"this is not a tar archive at all" * 40)
    # Cut exactly between two members: tarfile alone would take that for the end of the archive.
    e_full = [("v0.jpg", photo["coffee.png"]), ("v1.jpg", photo["sunset.jpg"])]
    write_tar(tmp_path / "e_full.tar", e_full)
    with tarfile.open(tmp_path / "e_full.tar") as t:
        v1 = t.getmember("v1.jpg")
    (src / "e.tar").write_bytes((tmp_path / "e_full.tar").read_bytes()[: v1.offset])
    good = {**samples_of(dict(a)), **{k: v for k, v in samples_of(dict(b)).items() if k != "s0"},
            **{k: v for k, v in samples_of(dict(c_full)).items() if k in ("u0", "u1")}}
    for k in ("s2", "s3", "s6"):
        del good[k]
    failures = {  # key -> words its error must hold
        "s2": ["a.tar", "sample s2", "no image member", "s2.txt"],
        "s3": ["a.tar", "sample s3", "no image member", "s3.tiff"],
        "s6": ["a.tar", "sample s6", "image member s6.jpg is empty"],
        "s0@b": ["b.tar", "sample s0", "already in shard", "a.tar"],
        "u2": ["c.tar", "sample u2", "breaks inside it"],
        f"{src}/c.tar#truncated": ["c.tar", "after sample u2"],
        f"{src}/d.tar#unreadable": ["d.tar", "not a tar"],
        # Whole as far as it goes, but the break may have taken a later member of it (v0.txt).
        "v0": ["e.tar", "sample v0", "breaks after its members v0.jpg"],
        f"{src}/e.tar#truncated": ["e.tar", "after sample v0", "no end-of-archive marker"],
    }
    return src, good, failures


MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.mark.parametrize("extra, many, key_check", [([], False, "launcher"), ([], True, "launcher"),
                                                     (MULTI, True, "pipeline")],
                         ids=["in-process", "in-process-many-shards", "multi-process-key-pre-pass"])
def test_bad_input_is_failed_records_naming_shard_and_sample(tmp_path, bad_shards, extra, many, key_check,
                                                             monkeypatch):
    """Keys repeated across shards are found by the launcher for a few small local shards, or
    for any local shards when the pipeline runs in its process, and by the pipeline's pre-pass
    otherwise: the same failed records either way."""
    if many:  # more shards than the launcher checks for other runners
        monkeypatch.setattr(webdataset_read, "LOCAL_KEY_CHECK_SHARDS", 0)
    src, good, failures = bad_shards
    found = inputs.resolve([str(src)], "webdataset", in_process=not extra).repeated_keys
    assert found == (None if key_check == "pipeline" else {(f"{src}/b.tar", "s0"): f"{src}/a.tar"})
    out, shards = tmp_path / "out", tmp_path / "new"
    argv = ["--input", str(src), "--input-format", "webdataset", "--output", str(out), *STATE,
            "--write-shards", str(shards), "--shard-size", "0.3", *extra]
    assert dedup_images.main(argv) == 0
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    by_key = {}
    for r in failed:
        name = "s0@b" if r["key"] == "s0" else r["key"]
        assert name not in by_key, f"{name} failed twice"
        by_key[name] = r
    assert set(by_key) == set(failures)
    for name, words in failures.items():
        error = by_key[name]["error"]
        assert all(w in error for w in words), (name, error)
        assert by_key[name]["shard"].endswith(words[0]) and by_key[name]["image_phash"] is None
    assert by_key["s2"]["members"] == ["txt", "json"] and by_key["s3"]["members"] == ["tiff", "txt"]
    # Everything else was read, once: s5 is a byte copy of s0.
    assert sorted(r["key"] for r in kept + dups) == sorted(good)
    (dup,) = dups
    assert {dup["key"], dup["duplicate_of"]} == {"s0", "s5"}
    s0 = next(r for r in kept + dups if r["key"] == "s0")
    assert s0["shard"] == f"{src}/a.tar" and s0["members"] == ["jpg", "txt", "json"] and s0["image_member"] == "jpg"
    s = summary(out)
    assert (s["inputs"], s["kept"], s["duplicates"], s["failed"]) == (len(good) + len(failures), len(good) - 1, 1,
                                                                     len(failures))
    assert s["adds_up"]
    # The kept samples, every member intact (the unknown s4.seg.xyz too), in dense shards.
    written = read_back_with_webdataset(shards)
    assert set(written) == {r["key"] for r in kept}
    for key, members in written.items():
        assert members == good[key], key
    names = sorted(p.rsplit("/", 1)[-1] for p in glob.glob(f"{shards}/*.tar"))
    assert len(names) >= 2 and names == [f"{i:05d}.tar" for i in range(len(names))]
    assert not glob.glob(f"{shards}/.tmp-*")
    keys = pq.read_table(sorted(glob.glob(f"{shards}/kept_keys/*.parquet"))).column("key").to_pylist()
    assert sorted(keys) == sorted(written)


def test_sidecar_columns_are_joined_and_image_ext_order(tmp_path):
    src = tmp_path / "shards"
    src.mkdir()
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(src / "00000.tar", [("k0.png", photo["coffee.png"]), ("k0.jpg", photo["pool.jpg"]),
                                  ("k1.jpg", photo["snow.jpg"])])
    pq.write_table(pa.Table.from_pylist([
        {"key": "k0", "caption": "both", "status": "success", "error_message": None, "width": 1},
        {"key": "k1", "caption": "snow", "status": "success", "error_message": None, "width": 2},
        {"key": "k2", "caption": "gone", "status": "failed_to_download", "error_message": "HTTP 404", "width": None},
    ]), src / "00000.parquet")
    out = tmp_path / "out"
    argv = ["--input", str(src / "*.tar"), "--input-format", "webdataset", "--image-ext", "png,jpg",
            "--output", str(out), *STATE]
    assert dedup_images.main(argv) == 0
    kept = {r["key"]: r for r in read(out, "kept")}
    assert kept["k0"]["image_member"] == "png" and kept["k0"]["caption"] == "both" and kept["k1"]["width"] == 2
    (gone,) = read(out, "failed")
    assert gone["key"] == "k2" and gone["caption"] == "gone" and "status failed_to_download: HTTP 404" in gone["error"]
    assert summary(out)["adds_up"] and summary(out)["inputs"] == 3
    # Without the sidecar: no extra columns, and k2 is nobody's business.
    assert dedup_images.main(argv + ["--no-shard-metadata"]) == 0
    assert "caption" not in read(out, "kept")[0] and summary(out)["inputs"] == 2


@pytest.mark.parametrize("runner", [[], MULTI], ids=["in-process", "multi-process"])
@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_a_glob_over_an_img2dataset_folder_reads_only_its_shards(tmp_path, runner, fmt):
    """`--input 'DIR/*'` over img2dataset's output also matches each shard's Parquet sidecar and
    its statistics file: those are not shards, so they are neither read as shards (failed
    records) nor counted as inputs. The same for its Parquet output, whose statistics stopped
    the run ("cannot read the Parquet schema of 00000_stats.json")."""
    src = tmp_path / "crawl"
    src.mkdir()
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    for shard, (key, name) in enumerate([("a", "pool.jpg"), ("b", "snow.jpg")]):
        row = {"key": key, "caption": "c", "status": "success", "error_message": None}
        if fmt == "webdataset":
            write_tar(src / f"{shard:05d}.tar", [(f"{key}.jpg", photo[name]), (f"{key}.txt", b"caption")])
        else:
            row["jpg"] = photo[name]
        pq.write_table(pa.Table.from_pylist([row]), src / f"{shard:05d}.parquet")
        (src / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 1, "successes": 1}))
    out = tmp_path / "out"
    assert dedup_images.main(["--input", f"{src}/*", "--input-format", fmt, "--output", str(out),
                              "--no-report", *STATE, *runner]) == 0
    assert sorted(r["key"] for r in read(out, "kept")) == ["a", "b"] and read(out, "failed") == []
    assert summary(out)["inputs"] == 2 and summary(out)["input_files"] == 2 and summary(out)["adds_up"]
    assert summary(out)["input_patterns"] == [f"{src}/*"]  # as given, not the shards' names


def _against_reference(tmp_path, ref):
    """A shard of pool (key a) and snow (key b) deduplicated against the references at ``ref``;
    the output folder."""
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("a.jpg", (DATA / "pool.jpg").read_bytes()), ("b.jpg", (DATA / "snow.jpg").read_bytes())])
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--reference", str(ref),
                              "--output", str(out), *STATE]) == 0
    return out


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_reference_accepts_shards(tmp_path, suffix):
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    ref = tmp_path / "ref"
    ref.mkdir()
    write_tar(ref / f"00000{suffix}", [("r0.jpg", photo["pool.jpg"]), ("r1.txt", b"no image")],
              "w:gz" if suffix == ".tar.gz" else "w")
    out = _against_reference(tmp_path, ref)
    (dup,) = read(out, "duplicates")
    assert (dup["key"], dup["duplicate_of"], dup["matched"]) == ("a", "r0", "reference")
    s = summary(out)
    assert s["reference"]["format"] == "webdataset" and s["reference"]["failed"] == 1
    assert "r1" in s["reference"]["failures"][0]["id"] and "no image member" in s["reference"]["failures"][0]["error"]


def test_a_reference_shards_failed_downloads_are_failed_references(tmp_path):
    """img2dataset's sidecar lists the downloads that failed: as with input shards, each is a
    failed reference with its status (and a sample listed as downloaded but missing, too), so
    the references that never took part are reported, not left out."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    ref = tmp_path / "ref"
    ref.mkdir()
    write_tar(ref / "00000.tar", [("r0.jpg", photo["pool.jpg"]), ("r0.txt", b"caption")])
    pq.write_table(pa.Table.from_pylist([
        {"key": "r0", "caption": "pool", "status": "success", "error_message": None},
        {"key": "r1", "caption": "gone", "status": "failed_to_download", "error_message": "HTTP 404"},
        {"key": "r2", "caption": "lost", "status": "success", "error_message": None},
    ]), ref / "00000.parquet")
    out = _against_reference(tmp_path, ref)
    (dup,) = read(out, "duplicates")
    assert (dup["key"], dup["duplicate_of"]) == ("a", "r0")
    failed = {r["id"]: r["error"] for r in read(out, "reference_failed")}
    assert sorted(failed) == ["r1", "r2"]
    assert "status failed_to_download: HTTP 404" in failed["r1"] and "not in the shard" in failed["r2"]
    s = summary(out)
    assert (s["reference"]["references"], s["reference"]["failed"], s["adds_up"]) == (1, 2, True)


@pytest.mark.parametrize("layout", ["plain", "pax", "gz"])
def test_a_sample_whose_member_is_a_link_is_a_failed_record(tmp_path, layout):
    """GNU tar stores a second name of one file as a hard link and keeps symbolic links: such a
    member has no bytes of its own in the shard. Its sample is a failed record that names the
    link, never a sample that silently vanishes (as a link-only one did) or one said to have no
    image; on each path of the reader (the plain parser, tarfile from a PAX header on, the
    stream of a compressed shard)."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    shards = tmp_path / "shards"
    shards.mkdir()
    name = shards / ("00000.tar.gz" if layout == "gz" else "00000.tar")
    with tarfile.open(name, "w:gz" if layout == "gz" else "w",
                      format=tarfile.PAX_FORMAT if layout == "pax" else tarfile.GNU_FORMAT) as tar:
        def add(member, data=None, link=None, kind=tarfile.REGTYPE):
            info = tarfile.TarInfo(member)
            if layout == "pax" and member == "a.jpg":
                info.pax_headers = {"comment": "makes tarfile read from here on"}
            if link is not None:
                info.type, info.linkname = kind, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("a.jpg", photo["pool.jpg"])
        add("a.txt", b"pool")
        add("b.jpg", link="a.jpg", kind=tarfile.LNKTYPE)
        add("c.jpg", link="../elsewhere/c.jpg", kind=tarfile.SYMTYPE)
        add("c.txt", b"caption")
        add("d.jpg", photo["snow.jpg"])
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(shards), "--input-format", "webdataset", "--output", str(out),
                              "--no-report", *STATE]) == 0
    assert sorted(r["key"] for r in read(out, "kept")) == ["a", "d"]
    failed = {r["key"]: r["error"] for r in read(out, "failed")}
    assert sorted(failed) == ["b", "c"]
    assert "member b.jpg is a hard link to a.jpg" in failed["b"]
    assert "member c.jpg is a symbolic link to ../elsewhere/c.jpg" in failed["c"]
    assert summary(out)["inputs"] == 4 and summary(out)["adds_up"]


def test_a_folder_means_its_shards_compressed_or_not(tmp_path):
    """`--input DIR` read only DIR/*.tar: the .tar.gz shards beside them (and their sidecars'
    failed downloads) were left out of a run that added up. Then a shard named in upper case
    (00002.TAR) was passed over without a word, and a gzip shard named .tar (which `tar -tf` and
    webdataset read) failed whole as "not a tar archive"."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    src = tmp_path / "crawl"
    src.mkdir()
    shards = [("a", "pool.jpg", "w", "tar"), ("b", "snow.jpg", "w:gz", "tar.gz"), ("c", PHOTOS[2].name, "w", "TAR"),
              ("d", PHOTOS[3].name, "w:gz", "tar")]
    for shard, (key, name, mode, suffix) in enumerate(shards):
        write_tar(src / f"{shard:05d}.{suffix}", [(f"{key}.jpg", photo[name])], mode)
        pq.write_table(pa.Table.from_pylist([
            {"key": key, "status": "success", "error_message": None},
            {"key": key + "x", "status": "failed_to_download", "error_message": "HTTP 404"}]),
            src / f"{shard:05d}.parquet")
    assert (src / "00003.tar").read_bytes()[:2] == b"\x1f\x8b"
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(out),
                              "--no-report", *STATE]) == 0
    assert sorted(r["key"] for r in read(out, "kept")) == ["a", "b", "c", "d"]
    assert sorted(r["key"] for r in read(out, "failed")) == ["ax", "bx", "cx", "dx"]
    assert summary(out)["inputs"] == 8 and summary(out)["input_files"] == 4 and summary(out)["adds_up"]


@pytest.mark.parametrize("damaged", [0, 1])
def test_a_damaged_sidecar_is_a_failed_record_not_a_refused_run(tmp_path, damaged):
    """A sidecar cut short (img2dataset killed while writing it) stopped the launcher, which
    reads every local sidecar's footer for the columns: the reader already reports it as a
    failed record and reads the shard's samples, so the run goes on."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    src = tmp_path / "crawl"
    src.mkdir()
    for shard, (key, name) in enumerate([("a", "pool.jpg"), ("b", "snow.jpg")]):
        write_tar(src / f"{shard:05d}.tar", [(f"{key}.jpg", photo[name])])
        pq.write_table(pa.Table.from_pylist([{"key": key, "caption": "c" + key, "status": "success",
                                              "error_message": None}]), src / f"{shard:05d}.parquet")
    cut = src / f"{damaged:05d}.parquet"
    cut.write_bytes(cut.read_bytes()[:100])
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(out),
                              "--no-report", *STATE]) == 0
    kept = {r["key"]: r["caption"] for r in read(out, "kept")}
    assert kept == {"a": None, "b": "cb"} if damaged == 0 else kept == {"a": "ca", "b": None}
    (failed,) = read(out, "failed")
    assert failed["key"].endswith(f"{damaged:05d}.parquet#unreadable") and "cannot be read" in failed["error"]
    assert summary(out)["adds_up"]


@pytest.mark.parametrize("reference", ["hf", "img2dataset"])
@pytest.mark.parametrize("input_format", ["webdataset", "parquet"])
def test_a_parquet_reference_finds_its_own_columns_whatever_the_input(tmp_path, input_format, reference):
    """The reference took the columns the input had come to (a shard's `key`, an img2dataset
    Parquet's `jpg`), so a Hugging Face style reference (`id`, `image`) was refused unless the
    input was image files; it detects its own, as the help says (default: --image-column)."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    src = tmp_path / "in"
    src.mkdir()
    if input_format == "webdataset":
        write_tar(src / "00000.tar", [("a.jpg", photo["pool.jpg"]), ("b.jpg", photo["snow.jpg"])])
    else:
        pq.write_table(pa.table({"key": ["a", "b"], "jpg": [photo["pool.jpg"], photo["snow.jpg"]],
                                 "status": ["success"] * 2, "error_message": [None, None]}), src / "00000.parquet")
    ref = tmp_path / "ref"
    ref.mkdir()
    columns = {"hf": ("id", "image"), "img2dataset": ("key", "jpg")}[reference]
    pq.write_table(pa.table({columns[0]: ["r0"], columns[1]: [photo["pool.jpg"]]}), ref / "part-0.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", input_format, "--reference", str(ref),
                              "--output", str(out), "--no-report", *STATE]) == 0
    (dup,) = read(out, "duplicates")
    assert (dup["key"], dup["duplicate_of"], dup["matched"]) == ("a", "r0", "reference")


@pytest.mark.parametrize("second", ["{pq}/z.parquet", "{pq}", "{notes}"])
def test_shards_and_parquet_references_together_are_refused(tmp_path, capsys, second):
    """A Parquet reference beside WebDataset ones was taken for the shards' sidecar and never
    read (or, as a folder, read as DIR/*.tar: "matched no files"). Shards beside any other file
    (a README.txt in the folder) were read as images, each shard failing as one: a
    decontamination run that matched nothing, and said nothing."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    shards, tables = tmp_path / "shards", tmp_path / "tables"
    shards.mkdir()
    tables.mkdir()
    write_tar(shards / "00000.tar", [("r0.jpg", photo["pool.jpg"])])
    pq.write_table(pa.table({"id": ["z"], "image": [photo["snow.jpg"]]}), tables / "z.parquet")
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("a.jpg", photo["snow.jpg"])])
    argv = ["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "out"),
            "--reference", str(shards), "--reference", second.format(pq=tables, notes=shards / "README.txt"), *STATE]
    if second == "{notes}":
        (shards / "README.txt").write_text("the evaluation set\n")
        write_tar(shards / "00001.tar", [("r1.jpg", photo["snow.jpg"])])
        argv = argv[:-len(STATE) - 2] + STATE  # the folder alone, the notes in it
    assert dedup_images.main(argv) == 2
    err = capsys.readouterr().err
    assert "give references of one format" in err and "\n" not in err.strip()
    if second == "{notes}":
        assert "README.txt" in err and "--reference-format" in err, err
        argv[argv.index("--reference") + 2:argv.index("--reference") + 2] = ["--reference-format", "webdataset"]
        assert dedup_images.main(argv) == 0, capsys.readouterr().err
        (dup,) = read(tmp_path / "out", "duplicates")
        assert (dup["key"], dup["duplicate_of"], dup["matched"]) == ("a", "r1", "reference")


@pytest.mark.parametrize("layout", ["webdataset", "parquet"])
@pytest.mark.parametrize("given", ["{ref}", "{ref}/*"])
@pytest.mark.parametrize("stem", ["00000", "part[1]"])
def test_reference_to_an_img2dataset_folder_is_detected_past_its_stats_files(tmp_path, layout, given, stem):
    """img2dataset writes NNNNN_stats.json beside each shard or Parquet file: `--reference DIR`
    (or DIR/*) is still that format, not a folder of image files that all fail to decode; and a
    `[` in a file's name is not read as a wildcard once the files are detected."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    ref = tmp_path / "ref"
    ref.mkdir()
    if layout == "webdataset":
        write_tar(ref / f"{stem}.tar", [("r0.jpg", photo["pool.jpg"])])
    else:
        pq.write_table(pa.table({"key": ["r0"], "jpg": [photo["pool.jpg"]], "status": ["success"]}),
                       ref / f"{stem}.parquet")
    (ref / f"{stem}_stats.json").write_text(json.dumps({"count": 1, "successes": 1}))
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("a.jpg", photo["pool.jpg"]), ("b.jpg", photo["snow.jpg"])])
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(out),
                              "--reference", given.format(ref=ref),
                              # (shards' ids are their keys: the option is for Parquet references)
                              *(["--reference-id-column", "key"] if layout == "parquet" else []),
                              *STATE]) == 0
    (dup,) = read(out, "duplicates")
    assert (dup["key"], dup["duplicate_of"], dup["matched"]) == ("a", "r0", "reference")
    assert summary(out)["reference"]["format"] == layout and summary(out)["reference"]["failed"] == 0


def _read_shard(path, columns=("caption",)):
    """``(records, failed)`` of one shard, read by the reader's DoFn."""
    out = list(webdataset_read.ReadShardDoFn(("jpg",), columns).process(str(path)))
    return [o for o in out if isinstance(o, dict)], [o.value for o in out if not isinstance(o, dict)]


def test_an_empty_image_member_gives_way_to_another(tmp_path):
    """An empty K.jpg beside K.png: the png is the image (the sample failed as empty); a sample
    whose image members are all empty fails naming them."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(tmp_path / "00000.tar", [("k0.jpg", b""), ("k0.png", photo["chelsea.png"]), ("k0.txt", b"c"),
                                       ("k1.jpg", b""), ("k1.png", b""), ("k2.png", b"")])
    out = list(webdataset_read.ReadShardDoFn(("jpg", "png"), ()).process(str(tmp_path / "00000.tar")))
    (record,) = [o for o in out if isinstance(o, dict)]
    assert (record["key"], record["image_member"], record["image"]) == ("k0", "png", photo["chelsea.png"])
    assert record["members"] == ["jpg", "png", "txt"] and record["member_bytes"] == {"jpg": b"", "txt": b"c"}
    errors = {o.value["key"]: o.value["error"] for o in out if not isinstance(o, dict)}
    assert errors["k1"].endswith("sample k1: its image members k1.jpg, k1.png are empty"), errors
    assert errors["k2"].endswith("sample k2: its image member k2.png is empty"), errors


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar.gz"])
def test_samples_split_by_plain_tar_are_joined_when_their_image_comes_later(tmp_path, compressed):
    """`tar -cf shard.tar -C folder .` stores members in the folder's order, which splits samples.
    A part without an image came first and failed as such, and the part with the image then failed
    as a repeated key: the image was never hashed. Now the first part is held and joined to it; a
    part without an image after its sample's image fails saying why; a part held whose image
    never comes fails as a sample without one; a part that repeats a held part's suffix lets it go."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    members = [("k1.txt", b"c1"), ("k2.jpg", photo["pool.jpg"]), ("k3.json", b"{}"), ("k1.jpg", photo["snow.jpg"]),
               ("k2.txt", b"c2"), ("k3.jpg", photo["skagen.jpg"]), ("k4.txt", b"c4"), ("k5.txt", b"x"),
               ("k1.cls", b"7"), ("k5.txt", b"y"), ("k5.jpg", photo["pool.jpg"])]
    name = "00000.tar.gz" if compressed else "00000.tar"
    write_tar(tmp_path / name, members, mode="w:gz" if compressed else "w")
    out = list(webdataset_read.ReadShardDoFn(("jpg",), ()).process(str(tmp_path / name)))
    records = {o["key"]: o for o in out if isinstance(o, dict)}
    failed = sorted((o.value["key"], o.value["error"].split(": ", 1)[1]) for o in out if not isinstance(o, dict))
    assert {k: (r["members"], r["image"], r["member_bytes"]) for k, r in records.items()} == {
        "k1": (["txt", "jpg"], photo["snow.jpg"], {"txt": b"c1"}),
        "k2": (["jpg"], photo["pool.jpg"], {}),
        "k3": (["json", "jpg"], photo["skagen.jpg"], {"json": b"{}"}),
        "k5": (["txt", "jpg"], photo["pool.jpg"], {"txt": b"y"})}
    after = ("come after its image, past other samples' members, and are not carried with it (a shard made with "
             "plain tar -cf from a folder splits samples; tar --sort=name keeps each sample's members together)")
    assert failed == [("k1", f"sample k1: its members k1.cls {after}"),
                      ("k2", f"sample k2: its members k2.txt {after}"),
                      ("k4", "sample k4 has no image member with a suffix among jpg (members: k4.txt)"),
                      ("k5", "sample k5 has no image member with a suffix among jpg (members: k5.txt)")], failed


def test_split_samples_with_a_mask_first_or_first_in_another_shard(tmp_path):
    """A part holding only K.seg.png waits for its K.jpg (which is the image, the mask carried
    along), and is the image when no K.jpg comes; every part of a sample first in an earlier
    shard fails as that; a later part cut in its first member fails with the break."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(tmp_path / "a.tar", [("k9.jpg", photo["pool.jpg"])])
    write_tar(tmp_path / "b.tar", [("k1.seg.png", b"mask"), ("k2.jpg", photo["pool.jpg"]), ("k3.seg.png", b"m3"),
                                   ("k9.txt", b"c9"), ("k1.jpg", photo["snow.jpg"]), ("k9.jpg", photo["snow.jpg"])])
    repeated = webdataset_read.repeated_keys([str(tmp_path / "a.tar"), str(tmp_path / "b.tar")])
    out = list(webdataset_read.ReadShardDoFn(("jpg", "png"), ()).process(str(tmp_path / "b.tar"), repeated))
    records = {o["key"]: (o["members"], o["image_member"]) for o in out if isinstance(o, dict)}
    assert records == {"k1": (["seg.png", "jpg"], "jpg"), "k2": (["jpg"], "jpg"), "k3": (["seg.png"], "seg.png")}
    failed = [(o.value["key"], o.value["members"], o.value["error"].split(": ", 1)[1]) for o in out
              if not isinstance(o, dict)]
    already = f"sample k9: key already in shard {tmp_path}/a.tar (the first shard by path is used)"
    assert failed == [("k9", ["txt"], already), ("k9", ["jpg"], already)], failed
    # cut inside the first member of a later part: the break, not a repeated key
    write_tar(tmp_path / "c.tar", [("k1.jpg", photo["pool.jpg"]), ("k2.jpg", photo["snow.jpg"]),
                                   ("k1.txt", b"x" * 5000)])
    data = (tmp_path / "c.tar").read_bytes()
    (tmp_path / "c.tar").write_bytes(data[:data.index(b"x" * 5000) + 100])
    records, failed = _read_shard(tmp_path / "c.tar", ())
    assert [r["key"] for r in records] == ["k1", "k2"]
    assert [(f["key"], f["members"]) for f in failed] == [("k1", []), (f"{tmp_path}/c.tar#truncated", [])], failed
    assert "sample k1: the shard breaks inside it (MemberCutShort: member k1.txt is cut short" in failed[0]["error"]


def test_held_parts_are_taken_as_they_are_at_a_break(tmp_path):
    """Samples whose only image is a tail suffix (IMG_1.edited.jpg) wait for a K.jpg: when the
    shard breaks after them they are records still (they failed as 'no image member')."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(tmp_path / "a.tar", [(f"IMG_{i}.edited.jpg", photo["pool.jpg"]) for i in range(3)]
              + [("IMG_9.jpg", photo["snow.jpg"])])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[:data.rindex(photo["snow.jpg"]) + 100])  # cut inside IMG_9.jpg
    records, failed = _read_shard(tmp_path / "a.tar", ())
    assert sorted((r["key"], r["image_member"]) for r in records) == [(f"IMG_{i}", "edited.jpg") for i in range(3)]
    assert [f["key"] for f in failed] == ["IMG_9", f"{tmp_path}/a.tar#truncated"], failed


def test_parts_held_for_their_image_are_bounded_and_said_at_a_break(tmp_path, monkeypatch):
    """Parts without an image are held up to HELD_BYTES (a shard of captions alone is not held
    whole): beyond it the oldest fail as samples without an image, and a later image of theirs
    is taken (it was a repeated key). A part held when the shard breaks inside its image fails
    with the break."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    monkeypatch.setattr(webdataset_read, "HELD_BYTES", webdataset_read.PART_BYTES + 5)  # one caption part
    write_tar(tmp_path / "00000.tar", [("a.txt", b"123"), ("b.txt", b"456"), ("a.jpg", photo["pool.jpg"]),
                                       ("b.jpg", photo["snow.jpg"])])
    records, failed = _read_shard(tmp_path / "00000.tar", ())
    assert [r["key"] for r in records] == ["a", "b"] and records[1]["members"] == ["txt", "jpg"]
    assert [(f["key"], f["error"].split(": ", 1)[1]) for f in failed] == [
        ("a", "sample a has no image member with a suffix among jpg (members: a.txt)")]
    monkeypatch.setattr(webdataset_read, "HELD_BYTES", 64 << 20)
    write_tar(tmp_path / "00001.tar", [("c.txt", b"c"), ("d.jpg", photo["pool.jpg"]), ("c.jpg", photo["snow.jpg"])])
    data = (tmp_path / "00001.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[:data.index(photo["snow.jpg"]) + 100])  # cut inside c.jpg
    records, failed = _read_shard(tmp_path / "00001.tar", ())
    assert [r["key"] for r in records] == ["d"]
    cut, rest = failed
    assert cut["key"] == "c" and cut["members"] == ["txt"], cut  # the member cut short is not one
    assert "sample c: the shard breaks inside it (MemberCutShort: member c.jpg is cut short" in cut["error"], cut
    assert rest["key"].endswith("00001.tar#truncated"), rest


def test_a_repeated_key_fails_with_its_sidecar_columns(tmp_path):
    """Every failed sample carries its sidecar row, a repeated key's too."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(tmp_path / "00000.tar", [("k0.jpg", photo["pool.jpg"]), ("k1.jpg", photo["snow.jpg"]),
                                       ("k0.jpg", photo["skagen.jpg"])])
    pq.write_table(pa.Table.from_pylist([{"key": f"k{i}", "caption": f"c{i}"} for i in range(2)]),
                   tmp_path / "00000.parquet")
    records, failed = _read_shard(tmp_path / "00000.tar")
    assert [r["key"] for r in records] == ["k0", "k1"]
    (again,) = failed
    assert again["key"] == "k0" and "key repeated within the shard" in again["error"] and again["caption"] == "c0"


def test_two_datasets_whose_keys_overlap_are_deduplicated_together(tmp_path):
    """Two img2dataset runs number their keys alike, from 000000000. A key is unique within one
    folder's shards, not across folders: given as two inputs, each run's samples are read (until
    2026-12-07 the second run's failed as repeated keys), a photo both runs fetched is one
    keeper, and a keeper of any folder but the first by path is named KEY (SHARD) by its
    duplicates. A key repeated in two shards of one folder still fails. --write-shards writes the
    second run's samples as KEY_TAG, so the shards it writes share no key and read back whole."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    runs = {"run_a": ["pool.jpg", "snow.jpg"], "run_b": ["skagen.jpg", "jesper.jpg", "skagen.jpg", "pool.jpg"]}
    for run, names in runs.items():
        (tmp_path / run).mkdir()
        write_tar(tmp_path / run / "00000.tar", [(f"00000000{i}.jpg", photo[n]) for i, n in enumerate(names)])
    write_tar(tmp_path / "run_a" / "00001.tar", [("000000000.jpg", photo["sunset.jpg"])])  # repeat in a folder
    out, shards = tmp_path / "out", tmp_path / "shards"
    assert dedup_images.main(["--input", str(tmp_path / "run_b"), "--input", str(tmp_path / "run_a"),
                              "--input-format", "webdataset", "--output", str(out), "--write-shards", str(shards),
                              "--no-report", *STATE]) == 0
    (failed,) = read(out, "failed")
    assert (failed["shard"], failed["key"]) == (f"{tmp_path}/run_a/00001.tar", "000000000"), failed
    assert f"key already in shard {tmp_path}/run_a/00000.tar" in failed["error"], failed
    kept, dups = read(out, "kept"), read(out, "duplicates")

    def name(row):
        return runs[row["shard"].split("/")[-2]][int(row["key"])]

    def dedup_id(row):  # the oracle: run_a is first by path
        return row["key"] if "/run_a/" in row["shard"] else f"{row['key']} ({row['shard']})"

    assert sorted(map(name, kept)) == ["jesper.jpg", "pool.jpg", "skagen.jpg", "snow.jpg"], kept
    keeper_of = {name(r): dedup_id(r) for r in kept}
    assert sorted((name(d), d["duplicate_of"]) for d in dups) == [
        ("pool.jpg", keeper_of["pool.jpg"]), ("skagen.jpg", keeper_of["skagen.jpg"])], (dups, keeper_of)
    assert keeper_of["skagen.jpg"].endswith(f" ({tmp_path}/run_b/00000.tar)")
    # The shards written hold every kept sample once, run_b's under KEY_TAG: no two share a key.
    names = tar_members_in_order(shards / "00000.tar")
    written = samples_of(tar_members(shards / "00000.tar"))
    assert len(names) == len(set(names)) == len(written) == 4, names
    listed = pq.read_table(str(shards / "kept_keys")).to_pylist()  # as read: key and shard
    assert sorted((r["key"], r["shard"]) for r in listed) == sorted((r["key"], r["shard"]) for r in kept), listed
    assert [r["dedup_id"] for r in kept] == [dedup_id(r) for r in kept]  # what duplicate_of names
    by_photo = {n: key for key, members in written.items() for n, data in photo.items() if members["jpg"] == data}
    assert by_photo["snow.jpg"] == "000000001" and by_photo["jesper.jpg"].startswith("000000001_"), by_photo
    assert len(by_photo["jesper.jpg"]) == len("000000001_") + 8
    assert dedup_images.main(["--input", str(shards), "--input-format", "webdataset", "--output", str(out),
                              "--no-report", *STATE]) == 0
    assert len(read(out, "kept")) == 4 and read(out, "failed") == [] and read(out, "duplicates") == []

def test_member_names_with_a_leading_dot_slash_or_not_utf8(tmp_path):
    """`tar -C DIR -cf shard.tar .` stores ./KEY.jpg: the key is still KEY, so the sidecar's rows
    join; a name whose bytes are not UTF-8 gets a key every output can write."""
    photo = PHOTOS[0].read_bytes()
    write_tar(tmp_path / "00000.tar", [("./k0.jpg", photo), ("./k0.txt", b"zero"), ("./k1.jpg", photo[:4000])])
    pq.write_table(pa.Table.from_pylist([{"key": "k0", "caption": "c0"}, {"key": "k1", "caption": "c1"}]),
                   tmp_path / "00000.parquet")
    records, failed = _read_shard(tmp_path / "00000.tar")
    assert [(r["key"], r["caption"], r["members"]) for r in records] == [("k0", "c0", ["jpg", "txt"]),
                                                                         ("k1", "c1", ["jpg"])]
    assert failed == []
    assert list(webdataset_read.list_keys(str(tmp_path / "00000.tar"))) == ["k0", "k1"]

    # the first member whose suffix is an image suffix, case ignored: k2.JPG before k2.jpg
    write_tar(tmp_path / "cases.tar", [("k2.JPG", photo), ("k2.jpg", photo[:4000])])
    records, _ = _read_shard(tmp_path / "cases.tar", ())
    assert [(r["key"], r["image_member"], r["member_bytes"]) for r in records] == [("k2", "JPG", {"jpg": photo[:4000]})]

    # A suffix of several parts ending in an image's (IMG_1.edited.jpg, as `tar -cf` of a folder
    # of photos stores it) was "no image member": the image when it is the only one; several
    # (keys with a dot: v1.2.jpg and v1.3.jpg split into one sample v1) fail, never chosen between.
    write_tar(tmp_path / "dots.tar", [("IMG_1.edited.jpg", photo), ("m.seg.PNG", photo[:3000]), ("m.txt", b"t"),
                                      ("v1.2.jpg", photo), ("v1.3.jpg", photo[:5000]), ("n.jpg", photo[:2000]),
                                      ("n.seg.png", photo[:1000])])
    out = list(webdataset_read.ReadShardDoFn(webdataset_read.DEFAULT_IMAGE_EXTS).process(str(tmp_path / "dots.tar")))
    records, failed = [o for o in out if isinstance(o, dict)], [o.value for o in out if not isinstance(o, dict)]
    # (a sample whose image is such a suffix waits, as a part, for a K.jpg till the shard's end)
    assert sorted((r["key"], r["image_member"], r["image"]) for r in records) == [
        ("IMG_1", "edited.jpg", photo), ("m", "seg.PNG", photo[:3000]), ("n", "jpg", photo[:2000])]
    assert {r["key"]: r["member_bytes"] for r in records}["n"] == {"seg.png": photo[:1000]}
    assert [(f["key"], f["members"]) for f in failed] == [("v1", ["2.jpg", "3.jpg"])]
    assert "several image members (v1.2.jpg, v1.3.jpg)" in failed[0]["error"], failed[0]

    write_tar(tmp_path / "latin.tar", [("caf\xe9.jpg", photo), ("ok.jpg", photo)],
              format=tarfile.USTAR_FORMAT, encoding="latin-1")
    records, failed = _read_shard(tmp_path / "latin.tar", ())
    assert [r["key"] for r in records] == ["caf\\xe9", "ok"] and failed == []
    pa.array([r["key"] for r in records])  # no lone surrogates: Arrow, Beam and Parquet take them


def test_members_with_a_hidden_basename_belong_to_no_sample(tmp_path):
    """macOS tar stores an AppleDouble ``._NAME`` before each file with extended attributes: the
    samples around them stay whole (the ``webdataset`` library passes them over too)."""
    import webdataset as wds

    photo = {p.name: p.read_bytes() for p in PHOTOS}
    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
    top = [("._d1.jpg", apple), ("d1.jpg", photo["pool.jpg"]), ("._d1.txt", apple), ("d1.txt", b"one"),
           ("./.DS_Store", apple), ("._d2.jpg", apple), ("d2.jpg", photo["snow.jpg"])]
    write_tar(tmp_path / "top.tar", top)
    theirs = [(s["__key__"], sorted(k for k in s if not k.startswith("__")))
              for s in wds.WebDataset([str(tmp_path / "top.tar")], shardshuffle=False)]
    assert theirs == [("d1", ["jpg", "txt"]), ("d2", ["jpg"])]
    # in a folder as well (there the webdataset library makes a sample "sub/" of each)
    write_tar(tmp_path / "00000.tar", top + [("sub/._d3.jpg", apple), ("sub/d3.jpg", photo["skagen.jpg"]),
                                             ("sub/d3.txt", b"three")])
    records, failed = _read_shard(tmp_path / "00000.tar", ())
    assert [(r["key"], r["members"]) for r in records] == [("d1", ["jpg", "txt"]), ("d2", ["jpg"]),
                                                           ("sub/d3", ["jpg", "txt"])]
    assert failed == []
    assert list(webdataset_read.list_keys(str(tmp_path / "00000.tar"))) == ["d1", "d2", "sub/d3"]

    # A shard cut inside a hidden member breaks between samples: the one before it may have had
    # more members after it (as at a header), and no sample of key "" is made of the hidden one.
    def cut_in_last(name, members):
        write_tar(tmp_path / name, members)
        before = sum(512 + -(-len(data) // 512) * 512 for _, data in members[:-1])
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:before + 512 + 10])
        return _read_shard(tmp_path / name, ())

    records, failed = cut_in_last("first.tar", [("._d1.jpg", apple * 50)])
    assert records == [] and [f["key"] for f in failed] == [f"{tmp_path / 'first.tar'}#truncated"]
    assert "before its first sample" in failed[0]["error"]
    records, failed = cut_in_last("after.tar", [("d1.jpg", photo["pool.jpg"]), ("d1.txt", b"one"),
                                                ("._d2.jpg", apple * 50)])
    assert records == [] and [f["key"] for f in failed] == ["d1", f"{tmp_path / 'after.tar'}#truncated"]
    assert "breaks after its members d1.jpg, d1.txt" in failed[0]["error"]


def test_a_truncated_shard_with_a_sidecar_counts_each_sample_once(tmp_path):
    """The samples after the break are the sidecar's rows, each a failed record saying so; no
    `#truncated` record is added for them (it would count the lost rest twice)."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    write_tar(tmp_path / "full.tar", [("k0.jpg", photo["pool.jpg"]), ("k1.jpg", photo["snow.jpg"]),
                                      ("k2.jpg", photo["skagen.jpg"]), ("k3.jpg", photo["jesper.jpg"])])
    with tarfile.open(tmp_path / "full.tar") as t:
        k1 = t.getmember("k1.jpg")
    (tmp_path / "00000.tar").write_bytes((tmp_path / "full.tar").read_bytes()[: k1.offset_data + 100])
    rows = [{"key": f"k{i}", "caption": f"c{i}"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "00000.parquet")
    records, failed = _read_shard(tmp_path / "00000.tar")
    assert [r["key"] for r in records] == ["k0"]
    assert [f["key"] for f in failed] == ["k1", "k2", "k3"]
    assert "breaks inside it" in failed[0]["error"] and failed[0]["caption"] == "c1"  # its sidecar row, too
    for f in failed[1:]:
        assert "truncated or damaged after sample k1" in f["error"] and f["caption"] == "c" + f["key"][1]
    # All listed samples read before the break: the break itself is still reported.
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "00000.parquet")
    records, failed = _read_shard(tmp_path / "00000.tar")
    assert [f["key"] for f in failed] == ["k1", f"{tmp_path / '00000.tar'}#truncated"]


@pytest.mark.parametrize("args, message", [
    (["--input-format", "webdataset"], "holds no WebDataset shards (.tar.gz"),  # the sample folder holds no shard
    (["--write-shards", "/tmp/x"], "--write-shards applies to --input-format webdataset"),
    (["--image-ext", "jpg"], "apply to --input-format webdataset"),
    (["--shard-size", "10"], "--shard-size applies with --write-shards"),
    (["--shard-size", "256"], "--shard-size applies with --write-shards"),  # the default's value too
])
def test_configuration_errors_are_one_line(tmp_path, capsys, args, message):
    assert dedup_images.main(["--output", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_write_shards_into_the_input_directory_is_refused(tmp_path, capsys):
    write_tar(tmp_path / "00000.tar", [("k.jpg", PHOTOS[0].read_bytes())])
    argv = ["--input", str(tmp_path), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
            "--write-shards", str(tmp_path)]
    assert dedup_images.main(argv) == 2
    assert "is an input directory" in capsys.readouterr().err
    # nor a reference directory (the run would first remove its shards), nor an endless shard size
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("k.jpg", PHOTOS[1].read_bytes())])
    argv = ["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
            "--reference", str(tmp_path), "--write-shards", str(tmp_path)]
    assert dedup_images.main(argv) == 2
    assert "is a --reference directory" in capsys.readouterr().err
    assert (tmp_path / "00000.tar").exists()
    argv[-1] = str(tmp_path / "new")
    assert dedup_images.main(argv + ["--shard-size", "inf"]) == 2
    assert "--shard-size must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("refusal", [["--hash_size", "8"], ["--backend", "state", "--num-buckets", "4"],
                                     ["--max-distance", "4", "--num-buckets", "4"]])
def test_a_refused_run_leaves_no_write_shards_folder_made_for_it(tmp_path, capsys, refusal):
    """Options are checked before the --write-shards folder is tried by writing to it."""
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("k.jpg", PHOTOS[0].read_bytes())])
    argv = ["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "new" / "out"),
            "--write-shards", str(tmp_path / "new" / "shards"), *refusal]
    assert dedup_images.main(argv) == 2
    assert capsys.readouterr().err.startswith("beam-phash: error: ")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag, name", [("--output", "run?"), ("--output", "run[1]"), ("--output", "r*"),
                                        ("--write-shards", "shards?")])
def test_an_output_named_with_wildcards_is_refused_and_touches_nothing(tmp_path, capsys, flag, name):
    """Beam matches the paths it clears and renames as patterns: `--output run?` would empty
    run1, an earlier run's results (and `--write-shards shards?` remove shards1's shards)."""
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [("k.jpg", PHOTOS[0].read_bytes())])
    base = ["--input", str(src), "--input-format", "webdataset", *STATE, "--no-report"]
    earlier = ["--output", str(tmp_path / "run1"), "--write-shards", str(tmp_path / "shards1")]
    assert dedup_images.main(base + earlier) == 0
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "logs" not in p.parts)
    named = {"--output": ["--output", str(tmp_path / name)],
             "--write-shards": ["--output", str(tmp_path / "o"), "--write-shards", str(tmp_path / name)]}[flag]
    assert dedup_images.main(base + named) == 2
    err = capsys.readouterr().err
    assert f"{flag} {str(tmp_path / name)!r} holds" in err and "choose a name without" in err
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                   if "logs" not in p.parts and p.name not in (name, "o"))
    assert after == before


def test_only_names_beam_would_read_as_patterns_are_refused():
    # An unclosed [ too: Beam's match reads it as a pattern, lists no folder, and the final
    # clean-up of the temporary folder failed after the whole run.
    for name in ("run?", "r*", "run[1]", "a[b]c", "out [draft"):
        with pytest.raises(inputs.ConfigError, match="choose a name without"):
            output_directory.check_plain_name(name, "--output")
    for name in ("a]b", "out/run-1", "gs://bucket/out"):
        output_directory.check_plain_name(name, "--output")


@pytest.mark.parametrize("pattern", ["{d}/**/*.tar", "{d}/*/*.tar", "{d}/c*/0000?.tar", "{link}"])
def test_write_shards_into_a_folder_a_glob_or_link_reaches_is_refused(tmp_path, capsys, pattern):
    """The shards writer first removes DIR/NNNNN.tar: an input a glob (or a symlink) leads into
    DIR would lose its shards before they are read, and a rerun would read the last run's."""
    for crawl, photo in (("crawl1", PHOTOS[0]), ("crawl2", PHOTOS[1])):
        (tmp_path / "d" / crawl).mkdir(parents=True)
        write_tar(tmp_path / "d" / crawl / "00000.tar", [("k.jpg", photo.read_bytes())])
    os.symlink(tmp_path / "d" / "crawl2", tmp_path / "link")
    before = (tmp_path / "d" / "crawl2" / "00000.tar").read_bytes()
    argv = ["--input", pattern.format(d=tmp_path / "d", link=tmp_path / "link"), "--input-format", "webdataset",
            "--output", str(tmp_path / "o"), "--write-shards", str(tmp_path / "d" / "crawl2")]
    assert dedup_images.main(argv) == 2
    assert "is an input directory" in capsys.readouterr().err
    assert (tmp_path / "d" / "crawl2" / "00000.tar").read_bytes() == before


@pytest.mark.parametrize("shape", ["link to a shard", "glob of some names"])
def test_a_rerun_whose_input_is_a_shard_it_would_remove_is_refused(tmp_path, capsys, shape):
    """The shards writer first removes the last run's DIR/NNNNN.tar: an input that is one of them
    by another name (a link to it, or a glob matching only some of DIR's names) is refused, and
    the shard is left as it was."""
    src, shards = tmp_path / "crawls" / "new", tmp_path / "crawls" / "dedup"
    src.mkdir(parents=True)
    write_tar(src / "00000.tar", [("a.jpg", PHOTOS[0].read_bytes())])
    rng = np.random.default_rng(5)
    for i in range(12):  # twelve distinct pictures: twelve more shards of one sample each
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).resize((96, 96)).save(buf, "PNG")
        write_tar(src / f"000{i + 10}.tar", [(f"s{i}.png", buf.getvalue())])
    run = ["--input-format", "webdataset", "--output", str(tmp_path / "o"), "--write-shards", str(shards),
           "--no-report", *STATE]
    assert dedup_images.main(["--input", str(src), *run, "--shard-size", "0.000001"]) == 0
    written = sorted(os.listdir(shards))
    assert len(written) > 2, written
    if shape == "link to a shard":
        (tmp_path / "links").mkdir()
        os.symlink(shards / "00000.tar", tmp_path / "links" / "old.tar")
        given = str(tmp_path / "links")
    else:  # matches crawls/new/0001*.tar, and crawls/dedup/00010.tar ... once written
        given = str(tmp_path / "crawls" / "*" / "0001*.tar")
    before = {n: (shards / n).read_bytes() for n in written if n.endswith(".tar")}
    assert dedup_images.main(["--input", given, *run]) == 2
    assert "would remove before reading it" in capsys.readouterr().err
    assert {n: (shards / n).read_bytes() for n in written if n.endswith(".tar")} == before


def test_the_shard_names_past_99999_and_an_earlier_run_s_leftovers_are_cleared(tmp_path):
    """Shard 100000 on has six digits: counted and cleared as the others; the parts and half-made
    shards of a run killed on the way are cleared too; other files are not touched."""
    from pipelines.output_directory import clear_shards
    from pipelines.webdataset_write import written_shards

    names = ["00000.tar", "99999.tar", "100000.tar", "123456.tar", "1234.tar", "notes.tar", "00003.tar.partial",
             "100001.tar.partial", ".tmp-0123456789ab/part.tar", "kept_keys/part-00000-of-00001.parquet",
             "00000.parquet"]
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert sorted(os.path.basename(m.path) for m in written_shards(str(tmp_path))) == [
        "00000.tar", "100000.tar", "123456.tar", "99999.tar"]
    clear_shards(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["00000.parquet", "1234.tar", "kept_keys", "notes.tar"]
    assert os.listdir(tmp_path / "kept_keys") == []


def test_no_shard_is_past_the_target_but_a_sample_larger_than_it(tmp_path):
    """A part is closed before a sample would take it past --shard-size: only a sample larger
    than the target makes a part (and a shard) alone that is larger."""
    from pipelines.webdataset_write import WritePartsDoFn, tar_bytes

    target = 1 << 20
    sizes = [300_000, 300_000, 300_000, 2_500_000, 300_000, 600_000, 200_000]
    dofn = WritePartsDoFn(str(tmp_path / ".tmp-run"), target, mtime=1)
    dofn.start_bundle()
    records = [{"key": f"k{i}", "members": ["jpg"], "image_member": "jpg", "image": b"x" * n, "member_bytes": {}}
               for i, n in enumerate(sizes)]
    for r in records:
        dofn.process(r)
    parts = [wv.value for wv in dofn.finish_bundle()]
    assert sum(p.samples for p in parts) == len(sizes)
    for p in parts:
        assert p.members_end <= target or p.samples == 1, p
    assert [p.samples for p in parts] == [3, 1, 2, 1]
    assert all(tar_bytes([("k.jpg", b"x" * n)]) == 512 + -(-n // 512) * 512 for n in sizes)
    for g in plan(parts, target):
        assert sum(p.members_end for p in g) <= target or len(g) == 1


def test_a_run_that_fails_while_it_publishes_shards_leaves_none(tmp_path, monkeypatch, capsys):
    """A failure after some shards were published (a full disk) must not leave a partial set of
    shards beside a complete kept_keys/, looking like a result."""
    from pipelines import webdataset_write

    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(PHOTOS[:4]):
        write_tar(src / f"0000{i}.tar", [(f"k{i}.jpg", photo.read_bytes()), (f"k{i}.txt", b"caption")])
    real = webdataset_write.FinalizeShardsDoFn.process

    def fails_after_the_first(self, element):
        published = real(self, element)
        yield next(published)
        raise OSError("No space left on device")

    monkeypatch.setattr(webdataset_write.FinalizeShardsDoFn, "process", fails_after_the_first)
    shards = tmp_path / "shards"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
                              "--write-shards", str(shards), "--shard-size", "0.000001", "--no-report",
                              *STATE]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert [n for n in os.listdir(shards) if n != "kept_keys"] == [] and not os.listdir(shards / "kept_keys")


def test_write_shards_keeps_every_member_name(tmp_path):
    """Names are written back as they were read: a '~' in a suffix is part of it, and a member
    name a sample repeats is written as many times, each with its own bytes."""
    photo = PHOTOS[0].read_bytes()
    members = [("k0.jpg", photo), ("k0.meta~v2.json", b"{}"), ("k0.txt~", b"tilde"),
               ("k0.txt", b"first"), ("k0.txt", b"second")]
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", members)
    shards = tmp_path / "shards"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
                              "--write-shards", str(shards), "--no-report", *STATE]) == 0
    (kept,) = read(tmp_path / "o", "kept")
    assert list(kept["members"]) == ["jpg", "meta~v2.json", "txt~", "txt", "txt"]
    with tarfile.open(shards / "00000.tar") as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == members
    # A run stopped by the failure threshold writes no shards and no kept keys.
    write_tar(src / "00001.tar", [("k9.jpg", b"not an image")])
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
                              "--write-shards", str(shards), "--max-decode-failures", "0", *STATE]) == 1
    assert os.listdir(shards) == [] or set(os.listdir(shards)) == {"kept_keys"} and not os.listdir(shards / "kept_keys")


def test_a_shard_of_split_samples_is_deduplicated_and_written_joined(tmp_path):
    """A shard whose samples are split as plain `tar -cf` of a folder may store them (each caption
    before its image, past other samples'): every image is hashed (an image and its copy are one
    kept and one duplicate), and --write-shards writes each sample's members together."""
    photos = [p.read_bytes() for p in PHOTOS[:4]] + [PHOTOS[0].read_bytes()]  # k4 copies k0
    order = [f"k{i}.txt" for i in range(5)] + [f"k{i}.jpg" for i in (3, 0, 4, 2, 1)]
    src = tmp_path / "in"
    src.mkdir()
    write_tar(src / "00000.tar", [(n, photos[int(n[1])] if n.endswith(".jpg") else n.encode()) for n in order])
    shards, out = tmp_path / "shards", tmp_path / "o"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(out),
                              "--write-shards", str(shards), "--no-report", *STATE, *MULTI]) == 0
    kept, dups = read(out, "kept"), read(out, "duplicates")
    assert sorted(r["key"] for r in kept + dups) == [f"k{i}" for i in range(5)] and len(dups) == 1, (kept, dups)
    assert {dups[0]["key"], dups[0]["duplicate_of"]} == {"k0", "k4"}
    assert not json.loads((out / "summary.json").read_text())["failed"]
    written = list(tar_members_in_order(shards / "00000.tar"))
    assert sorted(written) == sorted(n for n in order if n[:2] in {r["key"] for r in kept})
    for i in range(0, len(written), 2):  # each sample's two members side by side, caption first
        assert written[i][:2] == written[i + 1][:2] and written[i].endswith(".txt"), written


def tar_members_in_order(path):
    with tarfile.open(path) as tar:
        return [m.name for m in tar]


def test_finalize_packs_parts_and_ignores_failed_attempts(tmp_path):
    """Parts of a bundle that failed are never reported: the finalize step must not publish them,
    must delete them, and must be safe to run twice."""
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    tmp = tmp_path / ".tmp-run"
    tmp.mkdir()

    def part(keys):
        w = _PartWriter(str(tmp), mtime=1)
        for k in keys:
            w.add(sample_members({"key": k, "members": ["jpg", "txt"], "image_member": "jpg",
                                  "image": photo["pool.jpg"], "member_bytes": {"txt": k.encode()}}, k), k)
        return w.close()

    parts = [part(["c0", "c1"]), part(["a0"]), part(["b0", "b1", "b2"])]
    orphan = part(["x-failed-attempt"])
    target = parts[1].members_end + parts[2].members_end  # a0 and b0 fit together; c0 does not join
    groups = plan(parts, target)
    assert [[p.first_key for p in g] for g in groups] == [["a0", "b0"], ["c0"]]
    dofn = FinalizeShardsDoFn(str(tmp_path), str(tmp), target)
    results = list(dofn.process((None, parts)))
    assert results == [(f"{tmp_path}/00000.tar", 4), (f"{tmp_path}/00001.tar", 2)]
    assert not tmp.exists() and orphan.path.startswith(str(tmp))
    assert list(tar_members(tmp_path / "00000.tar")) == [
        "a0.jpg", "a0.txt", "b0.jpg", "b0.txt", "b1.jpg", "b1.txt", "b2.jpg", "b2.txt"]
    assert tar_members(tmp_path / "00001.tar")["c1.txt"] == b"c1"
    before = {p: open(p, "rb").read() for p in glob.glob(f"{tmp_path}/*.tar")}
    assert list(dofn.process((None, parts))) == results  # a retried finalize changes nothing
    assert {p: open(p, "rb").read() for p in glob.glob(f"{tmp_path}/*.tar")} == before
    assert isinstance(parts[0], Part)


# --- the real clients: img2dataset downloads from a local server; webdataset reads our shards -----

DEAD = ("gone.jpg", "missing/nothing.png")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Photos served over HTTP on 127.0.0.1: originals, byte copies, resized copies, broken files."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("site")
    for p in PHOTOS:
        (root / p.name).write_bytes(p.read_bytes())
    (root / "copy_of_pool.jpg").write_bytes((DATA / "pool.jpg").read_bytes())
    (root / "copy_of_chelsea.png").write_bytes((DATA / "chelsea.png").read_bytes())
    for name in ("snow.jpg", "skagen.jpg"):
        im = Image.open(DATA / name)
        (root / f"half_{name}").write_bytes(jpeg(im.resize((im.width // 2, im.height // 2)), quality=90))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    data = (DATA / "sunset.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def downloads(site, tmp_path_factory):
    """img2dataset's webdataset and parquet output of the site, with dead URLs in the list."""
    import os

    root, base = site
    work = tmp_path_factory.mktemp("img2dataset")
    names = sorted(p.name for p in root.iterdir()) + list(DEAD)
    urls = work / "urls.txt"
    urls.write_text("".join(f"{base}/{n}\n" for n in names))
    # Offline: no proxy for the local server, no update check by albumentations (an img2dataset
    # dependency) at import, also in img2dataset's spawned worker processes.
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy", "NO_ALBUMENTATIONS_UPDATE")}
    os.environ.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", NO_ALBUMENTATIONS_UPDATE="1")
    try:
        from img2dataset import download

        outputs = {}
        for fmt in ("webdataset", "parquet"):
            outputs[fmt] = work / fmt
            download(url_list=str(urls), input_format="txt", output_format=fmt, output_folder=str(outputs[fmt]),
                     processes_count=1, thread_count=4, number_sample_per_shard=5, resize_mode="no",
                     disable_all_reencoding=True, timeout=5, retries=0, enable_wandb=False,
                     distributor="multiprocessing", compute_hash=None)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root, base, outputs


def outcome(out, name_of, id_column="key") -> dict:
    """The run's results by served file name: hash groups (hash -> names), failed names."""
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    groups: dict = {}
    for r in kept + dups:
        groups.setdefault(r["image_phash"], set()).add(name_of(r))
    keepers = {r["image_phash"]: r for r in kept}
    assert len(keepers) == len(kept), "two records kept for one hash"
    for r in dups:
        assert r["duplicate_of"] == keepers[r["image_phash"]][id_column], r
    s = summary(out)
    assert s["adds_up"] and s["inputs"] == len(kept) + len(dups) + len(failed)
    return {"groups": groups, "failed": {name_of(r) for r in failed}}


@pytest.fixture(scope="module")
def files_run(site, tmp_path_factory):
    """The oracle: the job on the served files themselves."""
    root, _ = site
    out = tmp_path_factory.mktemp("files-run")
    assert dedup_images.main(["--input", str(root), "--output", str(out), "--no-report", *STATE]) == 0
    result = outcome(out, lambda r: r["id"].rsplit("/", 1)[-1], "id")
    # The oracle can fail: byte copies are grouped, broken files failed.
    assert {"pool.jpg", "copy_of_pool.jpg"} in result["groups"].values()
    assert {"chelsea.png", "copy_of_chelsea.png"} in result["groups"].values()
    assert result["failed"] == {"broken.jpg", "truncated.jpg"}
    return result


def _served_name(base):
    return lambda r: r["url"][len(base) + 1:]


@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
def test_img2dataset_shards_give_the_files_result_and_shards_round_trip(downloads, files_run, tmp_path,
                                                                       backend, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    root, base, outputs = downloads
    shards = outputs["webdataset"]
    assert len(glob.glob(f"{shards}/*.tar")) >= 3 and glob.glob(f"{shards}/*.parquet")
    out, new = tmp_path / "out", tmp_path / "new"
    argv = ["--input", str(shards), "--input-format", "webdataset", "--output", str(out), "--backend", backend,
            *buckets(backend), "--write-shards", str(new), "--shard-size", "0.5"]
    assert dedup_images.main(argv) == 0
    result = outcome(out, _served_name(base))
    assert result["groups"] == files_run["groups"]
    # img2dataset keeps failed downloads in the sidecar only; they are failed records here too.
    assert result["failed"] == files_run["failed"] | set(DEAD)
    dead = [r for r in read(out, "failed") if r["url"].endswith(DEAD)]
    assert all("404" in r["error"] and r["status"] == "failed_to_download" and r["shard"] for r in dead)
    # The new shards, read by the webdataset library: exactly the kept samples, members intact.
    original = {}
    for tar in glob.glob(f"{shards}/*.tar"):
        original.update(samples_of(tar_members(tar)))
    written = read_back_with_webdataset(new)
    kept = {r["key"] for r in read(out, "kept")}
    assert set(written) == kept
    for key, members in written.items():
        assert members == original[key] and set(members) >= {"jpg", "json"}, key
    keys = pq.read_table(sorted(glob.glob(f"{new}/kept_keys/*.parquet"))).column("key").to_pylist()
    assert sorted(keys) == sorted(kept)


def test_img2dataset_parquet_as_it_is_gives_the_files_result(downloads, files_run, tmp_path):
    root, base, outputs = downloads
    out = tmp_path / "out"
    # No --image-column / --id-column: img2dataset's jpg and key are found.
    assert dedup_images.main(["--input", str(outputs["parquet"]), "--input-format", "parquet",
                              "--output", str(out), *STATE]) == 0
    result = outcome(out, _served_name(base))
    assert result["groups"] == files_run["groups"]
    assert result["failed"] == files_run["failed"] | set(DEAD)
    dead = [r for r in read(out, "failed") if r["url"].endswith(DEAD)]
    assert len(dead) == 2 and all(r["error"].startswith("status failed_to_download: ") for r in dead)
    assert all(r["jpg"] is None and r["image_phash"] is None for r in dead)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_key_listing_agrees_with_tarfile(tmp_path, fmt):
    """The repeated-key pre-pass scans plain headers itself (and falls back to tarfile for PAX
    and GNU long names): its keys must be the ones the reader sees."""
    from pipelines.webdataset_read import list_keys

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in [("a/" + "d" * 120 + "/k1.jpg", b"x" * 700), ("a/" + "d" * 120 + "/k1.txt", b""),
                           ("dir", None), ("k2.jpg", b"y" * 512), ("lnk", "k2.jpg"), ("ü/k3.json", b"{}"),
                           ("k2.txt", b"again, not consecutive")]:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else None)
    with tarfile.open(path) as tar:
        keys = [split_name(m.name)[0] for m in tar if m.isfile()]
    expected = [k for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]]
    assert list(list_keys(str(path))) == expected
    assert expected == ["a/" + "d" * 120 + "/k1", "k2", "ü/k3", "k2"]
    # Plain ustar headers are walked in Rust; PAX and GNU long names are left to the reader.
    from beam_phash._native import tar_member_names
    with tarfile.open(path) as tar:
        names = [m.name for m in tar if m.isfile()]
    assert tar_member_names(str(path)) == (names if fmt == tarfile.USTAR_FORMAT else None)


def test_rust_header_walk_agrees_with_the_reader_on_damaged_shards(tmp_path, bad_shards):
    """Where a shard breaks, the Rust walk stops with the names before the break, as the
    reader's own walk does; a file that is not a plain tar from its first block (not a tar, or
    compressed whatever its name) is left to the reader (None)."""
    from beam_phash._native import tar_member_names
    from pipelines.tar_members import plain_members

    src, _, _ = bad_shards
    (src / "g.tar").write_bytes(gzip.compress((src / "a.tar").read_bytes()))
    for shard in sorted(src.glob("*.tar")):
        python_names, not_a_tar = [], False
        with open(shard, "rb") as f:
            try:
                for name, _ in plain_members(f, read_data=False):
                    python_names.append(name)
            except EOFError:
                pass
            except tarfile.ReadError:  # at the first block
                not_a_tar = True
        assert tar_member_names(str(shard)) == (None if not_a_tar else python_names), shard.name
    assert tar_member_names(str(src / "c.tar"))[-1] == "u2.jpg"  # cut inside u2's data
    assert tar_member_names(str(src / "d.tar")) is None and tar_member_names(str(src / "g.tar")) is None
    # Not a regular file: not a tar this walk handles. A directory, a device that reads zeros
    # forever (the walk read on past its end markers without end), a FIFO (it blocked in the open).
    assert tar_member_names(str(src)) is None
    assert tar_member_names("/dev/zero") is None
    os.mkfifo(tmp_path / "fifo.tar")
    assert tar_member_names(str(tmp_path / "fifo.tar")) is None


@pytest.mark.parametrize("damage", ["cut", "garbled header"])
def test_a_break_between_two_members_of_a_sample_fails_that_sample(tmp_path, damage):
    """The shard breaks at k1.json's header, after k1.jpg and k1.txt: k1 is not kept without its
    metadata (nor written so by --write-shards); it fails naming the members it had."""
    from pipelines.webdataset_read import ReadShardDoFn

    photo = PHOTOS[0].read_bytes()
    members = [(f"k{i}.{ext}", photo if ext == "jpg" else b"%d" % i) for i in range(3) for ext in ("jpg", "txt", "json")]
    path = tmp_path / "s.tar"
    write_tar(path, members)
    with tarfile.open(path) as tar:
        at = tar.getmember("k1.json").offset
    data = path.read_bytes()
    path.write_bytes(data[:at] if damage == "cut" else data[:at] + b"\xff" * 512 + data[at + 512:])
    out = list(ReadShardDoFn(("jpg",)).process(str(path)))
    assert [o["key"] for o in out if isinstance(o, dict)] == ["k0"]
    failed = [o.value for o in out if not isinstance(o, dict)]
    assert [f["key"] for f in failed] == ["k1", f"{path}#truncated"], failed
    assert "breaks after its members k1.jpg, k1.txt" in failed[0]["error"] and failed[0]["members"] == ["jpg", "txt"]


@pytest.mark.parametrize("layout", ["pax-long-names", "gzip", "gzip-cut", "gzip-cut-between"])
def test_reader_handles_pax_and_compressed_shards(tmp_path, layout):
    """Plain headers are parsed directly; PAX headers (long, non-ASCII names) are left to tarfile
    from where they start, compressed shards are streamed by tarfile; all give the same samples.
    A compressed shard cut inside a member, or between two (where tarfile stops as quietly as at
    the end-of-archive marker), loses no sample without a failed record, and keeps no sample
    whose later members the break may have taken."""
    from pipelines.webdataset_read import ReadShardDoFn

    photo = PHOTOS[0].read_bytes()
    members = [("k0.jpg", photo), ("k0.txt", b"zero"),
               ("d/" + "ü" * 80 + "/k1.jpg", photo[:5000]), ("d/" + "ü" * 80 + "/k1.json", b"{}"),
               ("k2.jpg", photo[:3000])]
    name = "s.tar" if layout.startswith("pax") else "s.tar.gz"
    path = tmp_path / name
    with tarfile.open(path, "w:gz" if name.endswith(".gz") else "w", format=tarfile.PAX_FORMAT) as tar:
        for n, data in members:
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if layout == "gzip-cut":
        path.write_bytes(path.read_bytes()[:-2000])
    if layout == "gzip-cut-between":  # the tar's data stops at k1's first header
        raw = gzip.decompress(path.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            k1 = next(m for m in tar.getmembers() if m.name.endswith("k1.jpg"))
        path.write_bytes(gzip.compress(raw[:k1.offset]))
    out = list(ReadShardDoFn(("jpg",)).process(str(path)))
    records = [o for o in out if isinstance(o, dict)]
    failed = [o.value for o in out if not isinstance(o, dict)]
    expected = samples_of(dict(members))
    if layout == "gzip-cut":  # the samples before the break, the broken one, then the rest
        keys = [r["key"] for r in records]
        assert keys == list(expected)[: len(keys)] and len(keys) < len(expected)
        assert [f["key"] for f in failed] == [list(expected)[len(keys)], f"{path}#truncated"]
        assert "breaks inside it" in failed[0]["error"] and "truncated or damaged" in failed[1]["error"]
        return
    if layout == "gzip-cut-between":
        # k0 may have had more members after k0.txt: it fails, naming the members it had.
        assert records == []
        assert [f["key"] for f in failed] == ["k0", f"{path}#truncated"]
        assert "breaks after its members k0.jpg, k0.txt" in failed[0]["error"], failed[0]
        assert "after sample k0" in failed[1]["error"] and "no end-of-archive marker" in failed[1]["error"]
        return
    assert not failed
    assert [r["key"] for r in records] == list(expected)
    for r in records:
        assert {r["image_member"]: r["image"], **r["member_bytes"]} == expected[r["key"]]


@pytest.mark.parametrize("stored", ["gzip, a byte changed", "gzip, intact", "plain tar named .tar.gz",
                                    "gzip named .tar, a byte changed", "gzip named .tar, intact",
                                    "gzip, junk after it", "gzip, two members", "gzip, zeros between members",
                                    "gzip, zeros after it"])
@pytest.mark.parametrize("opened", ["seekable", "as a stream"])
def test_a_gzip_shard_whose_check_fails_keeps_none_of_its_samples(tmp_path, monkeypatch, stored, opened):
    """tarfile's stream mode does not check gzip's CRC: a byte changed in k1's image (stored
    blocks, so nothing else notices) read as a whole shard, k1 kept with altered bytes. Every
    sample now fails naming the check; an intact shard, a plain tar with a gzip name (which
    tarfile reads as such), one with junk after its gzip member (ignored, as gzip -t ignores it)
    and one of two gzip members (tarfile read only the first), with or without zero bytes between
    them (the gzip module skips those; the reader stopped at them), read whole. A seekable shard
    (a local file, Beam's GCS and S3 readers) is opened once, its check and its read one after
    the other; one that can only be read forward is opened twice."""
    import pipelines.webdataset_read as wdr
    from pipelines.webdataset_read import ReadShardDoFn

    opens = []

    class Forward(io.RawIOBase):  # a file that can only be read forward
        def __init__(self, f):
            self._f = f

        def readable(self):
            return True

        def readinto(self, b):
            data = self._f.read(len(b))
            b[:len(data)] = data
            return len(data)

        def close(self):
            self._f.close()
            super().close()

    def counted(path, opened_as=wdr.open_stored):
        opens.append(path)
        f = opened_as(path)
        return io.BufferedReader(Forward(f)) if opened == "as a stream" else f

    monkeypatch.setattr(wdr, "open_stored", counted)

    photo = PHOTOS[0].read_bytes()
    members = [(f"k{i}.{ext}", photo if ext == "jpg" else b"%d" % i) for i in range(3) for ext in ("jpg", "txt")]
    plain = tmp_path / "plain.tar"
    write_tar(plain, members)
    raw = plain.read_bytes()
    path = tmp_path / ("s.tar" if "named .tar," in stored else "s.tar.gz")  # (by content, not name)
    if stored == "plain tar named .tar.gz":
        path.write_bytes(raw)
    elif stored == "gzip, junk after it":  # ignored, as gzip -t ignores it
        path.write_bytes(gzip.compress(raw) + b"\njunk")
    elif stored == "gzip, two members":  # cat a.gz b.gz, cut inside k1's image (tarfile read the first only)
        path.write_bytes(gzip.compress(raw[:len(raw) // 2]) + gzip.compress(raw[len(raw) // 2:]))
    elif stored == "gzip, zeros after it":
        path.write_bytes(gzip.compress(raw) + bytes(70_000))
    elif stored == "gzip, zeros between members":  # padded as on a tape: the gzip module reads on
        path.write_bytes(gzip.compress(raw[:len(raw) // 2]) + bytes(70_000) + gzip.compress(raw[len(raw) // 2:]))
        assert gzip.decompress(path.read_bytes()) == raw
    else:
        packed = bytearray(gzip.compress(raw, compresslevel=0))  # stored blocks: bytes as they are
        if stored.endswith("a byte changed"):
            with tarfile.open(plain) as tar:
                at = tar.getmember("k1.jpg").offset_data + 1000
            where = packed.find(raw[at - 64:at + 64]) + 64
            assert where >= 64
            packed[where] ^= 0x01
        path.write_bytes(bytes(packed))
    out = list(ReadShardDoFn(("jpg",)).process(str(path)))
    assert len(opens) == (1 if opened == "seekable" else 2)
    records = [o for o in out if isinstance(o, dict)]
    failed = [o.value for o in out if not isinstance(o, dict)]
    if not stored.endswith("a byte changed"):
        assert not failed and [r["key"] for r in records] == ["k0", "k1", "k2"]
        assert all(r["image"] == photo for r in records)
        return
    assert records == []
    assert [f["key"] for f in failed] == ["k0", "k1", "k2"]
    assert all("gzip check fails (zlib: Error -3 while decompressing data: incorrect data check)" in f["error"]
               for f in failed), failed[0]
    assert failed[1]["members"] == ["jpg", "txt"]


@pytest.mark.parametrize("joined", ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.xz, padded", "tar, PAX after",
                                    "tar, junk after", "tar.gz, junk after", "tar.gz, 300 archives"])
def test_archives_joined_one_after_another_are_read_whole(tmp_path, joined):
    """`cat a.tar b.tar` (or `cat a.tar.gz b.tar.gz`) is one shard of two archives, the first
    ending with its end-of-archive marker and padding. Its samples were read up to that marker
    only: the second archive's were lost without a word. They are read on past it, as
    `tar --ignore-zeros` reads them, by the reader and by the key listing; what follows a marker
    that is neither zeros nor a tar is a failed record, and the samples before it, which ended
    with the archive, are read (the last one was failed, as if the damage could have cut it)."""
    import bz2
    import lzma

    from pipelines.webdataset_read import ReadShardDoFn, _member_names

    photo = PHOTOS[0].read_bytes()
    parts = []
    for first, fmt in ((0, tarfile.USTAR_FORMAT), (2, tarfile.PAX_FORMAT if "PAX" in joined else tarfile.USTAR_FORMAT)):
        part = io.BytesIO()
        members = [(f"{'ü' * 60 if 'PAX' in joined and first else ''}k{i}.{ext}", photo if ext == "jpg" else b"%d" % i)
                   for i in range(first, first + 2) for ext in ("jpg", "txt")]
        write_tar(None, members, fileobj=part, format=fmt)
        parts.append(part.getvalue())
    assert len(parts[0]) % 10240 == 0  # padded to a whole record after its marker
    suffix = joined.split(",")[0]
    path = tmp_path / f"s.{suffix}"
    if "300" in joined:  # each a gzip member: read without one reader nested in the last's
        many = []
        for i in range(300):
            part = io.BytesIO()
            write_tar(None, [(f"m{i:03d}.jpg", photo[:100]), (f"m{i:03d}.txt", b"x")], fileobj=part)
            many.append(gzip.compress(part.getvalue(), compresslevel=1))
        path.write_bytes(b"".join(many))
        out = list(ReadShardDoFn(("jpg",)).process(str(path)))
        assert [o["key"] for o in out] == [f"m{i:03d}" for i in range(300)]
        return
    if "junk" in joined:
        parts[1] = b"junk" * 128
    if suffix == "tar.gz":
        data = gzip.compress(parts[0]) + gzip.compress(parts[1])
    elif suffix == "tar.bz2":  # two streams, as cat joins them, and zeros after the last
        data = bz2.compress(parts[0]) + bz2.compress(parts[1]) + bytes(1000)
    elif suffix == "tar.xz":  # (padded: zeros after each stream, as xz allows; lzma.LZMAFile refuses them)
        pad = bytes(1024) if "padded" in joined else b""
        data = lzma.compress(parts[0]) + pad + lzma.compress(parts[1]) + pad
    else:
        data = parts[0] + parts[1]
    path.write_bytes(data)
    out = list(ReadShardDoFn(("jpg",)).process(str(path)))
    records = [o for o in out if isinstance(o, dict)]
    failed = [o.value for o in out if not isinstance(o, dict)]
    if "junk" in joined:  # damage after the archive's end: k1 ended with it, whole
        assert [r["key"] for r in records] == ["k0", "k1"] and records[1]["image"] == photo
        assert [f["key"] for f in failed] == [f"{path}#truncated"], failed
        assert "after sample k1" in failed[0]["error"], failed[0]
        assert (f"the data after an end-of-archive marker, at byte {len(parts[0])}, is neither zeros nor another tar"
                in failed[0]["error"]), failed[0]
        return
    keys = ["k0", "k1", ("ü" * 60 if "PAX" in joined else "") + "k2", ("ü" * 60 if "PAX" in joined else "") + "k3"]
    assert not failed and [r["key"] for r in records] == keys
    assert all(r["image"] == photo for r in records)
    assert [n.split(".")[0] for n in _member_names(str(path))] == [k for k in keys for _ in range(2)]


def test_what_follows_an_end_marker_is_found_in_reads_of_any_size():
    """The stream after an archive's end comes in pieces of any size (gzip's output): a block
    that starts in one piece, all zeros up to there, and ends in the next is the next archive's
    first block, whole, at its offset; a plain tar whose first member is named BZh... is a tar,
    not bzip2."""
    from pipelines.tar_members import _first_data, stream_members

    pieces = iter([bytes(100), bytes(12) + b"J" * 500])
    start, head = _first_data(lambda n: next(pieces, b""), 1024)
    assert start == 1024 and head == bytes(112) + b"J" * 500
    part = io.BytesIO()
    write_tar(None, [("BZh_cat.jpg", b"x")], fileobj=part)
    part.seek(0)
    assert [n for n, _ in stream_members(part)] == ["BZh_cat.jpg"]


def test_a_gzip_shard_of_joined_archives_that_fails_its_check_names_every_sample(tmp_path):
    """Read unchecked to name its samples, a damaged shard went through tarfile's gzip, which
    reads the first gzip member only: the samples of the second archive had no record at all."""
    from pipelines.webdataset_read import ReadShardDoFn

    photo = PHOTOS[0].read_bytes()
    parts = []
    for first in (0, 2):
        part = io.BytesIO()
        write_tar(None, [(f"k{i}.{ext}", photo[:2000] if ext == "jpg" else b"t") for i in range(first, first + 2)
                         for ext in ("jpg", "txt")], fileobj=part)
        parts.append(part.getvalue())
    damaged = bytearray(gzip.compress(parts[0]) + gzip.compress(parts[1]))
    damaged[-8] ^= 0x01  # the second member's CRC
    path = tmp_path / "s.tar.gz"
    path.write_bytes(bytes(damaged))
    out = list(ReadShardDoFn(("jpg",)).process(str(path)))
    failed = [o.value for o in out if not isinstance(o, dict)]
    assert len(failed) == len(out) and [f["key"] for f in failed] == ["k0", "k1", "k2", "k3"], failed
    assert all("gzip check fails" in f["error"] for f in failed)


def test_a_gzip_shard_that_fails_its_check_takes_no_key_from_a_later_shard(tmp_path):
    """A key in a damaged gzip shard (first by path) and in an intact one: the intact copy is the
    one read, not failed as "already in" a shard whose every sample fails."""
    photo = PHOTOS[0].read_bytes()
    plain = tmp_path / "plain.tar"
    write_tar(plain, [("k1.jpg", photo)])
    packed = bytearray(gzip.compress(plain.read_bytes(), compresslevel=0))
    packed[len(packed) // 2] ^= 0x01  # inside k1's image, in a stored block
    (tmp_path / "a.tar.gz").write_bytes(bytes(packed))
    write_tar(tmp_path / "b.tar", [("k1.jpg", photo)])
    shards = [str(tmp_path / "a.tar.gz"), str(tmp_path / "b.tar")]
    assert list(webdataset_read.list_keys(shards[0])) == []
    assert webdataset_read.repeated_keys(shards) == {}
    # A CRC far past the end-of-archive marker (a tar padded with 300 KB of zeros), at which
    # tarfile stops reading: the listing still reads on to it.
    packed = bytearray(gzip.compress((tmp_path / "b.tar").read_bytes() + bytes(300_000), compresslevel=0))
    packed[-6] ^= 0x01  # in the CRC-32
    (tmp_path / "a.tar.gz").write_bytes(bytes(packed))
    assert list(webdataset_read.list_keys(shards[0])) == []


def test_finalize_retried_after_dying_while_cleaning_up(tmp_path, monkeypatch):
    """The finalize step dies after publishing the shards, having deleted one part of a
    concatenated shard: its retry must keep the shards as they were, not fail or rebuild them
    from what is left."""
    from pipelines import webdataset_write

    tmp = tmp_path / ".tmp-run"
    tmp.mkdir()
    parts = []
    for keys in (["a0"], ["b0"], ["c0", "c1"]):
        w = _PartWriter(str(tmp), mtime=1)
        for k in keys:
            w.add([(f"{k}.jpg", k.encode() * 300)], k)
        parts.append(w.close())
    target = parts[0].members_end + parts[1].members_end  # a0 + b0 concatenated, c0 alone
    dofn = FinalizeShardsDoFn(str(tmp_path), str(tmp), target)

    def dies_half_way(directory):
        import os
        os.remove(parts[1].path)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(webdataset_write, "remove_tree", dies_half_way)
    with pytest.raises(RuntimeError):
        list(dofn.process((None, parts)))
    first = {p: open(p, "rb").read() for p in sorted(glob.glob(f"{tmp_path}/*.tar"))}
    monkeypatch.undo()
    assert list(dofn.process((None, parts))) == [(f"{tmp_path}/00000.tar", 2), (f"{tmp_path}/00001.tar", 2)]
    assert {p: open(p, "rb").read() for p in sorted(glob.glob(f"{tmp_path}/*.tar"))} == first
    assert list(tar_members(tmp_path / "00000.tar")) == ["a0.jpg", "b0.jpg"] and not tmp.exists()


def test_sidecar_column_null_in_the_first_shard(tmp_path):
    src = tmp_path / "shards"
    src.mkdir()
    photo = {p.name: p.read_bytes() for p in PHOTOS}
    for i, (name, note) in enumerate([("pool.jpg", None), ("snow.jpg", "a note")]):
        write_tar(src / f"{i:05d}.tar", [(f"k{i}.jpg", photo[name])])
        pq.write_table(pa.Table.from_pylist([{"key": f"k{i}", "note": note}]), src / f"{i:05d}.parquet")
    assert pa.types.is_null(pq.read_schema(src / "00000.parquet").field("note").type)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(out), *STATE]) == 0
    assert {r["key"]: r["note"] for r in read(out, "kept")} == {"k0": None, "k1": "a note"}


def test_repeated_keys_found_in_any_bucket(tmp_path):
    """The key shuffle moves lists of keys per bucket: a key repeated across shards is found
    whatever the bucket count, with the first shard by path as its holder."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.repeated_keys import KEYS_PER_BUCKET, FindRepeatedKeys
    from pipelines.webdataset_read import list_keys

    for name, keys in (("a.tar", ["k0", "k1", "k2"]), ("b.tar", ["k3", "k1"]), ("c.tar", ["k1", "k2", "k4"])):
        write_tar(tmp_path / name, [(f"{k}.jpg", b"x") for k in keys])
    expected = [((f"{tmp_path}/b.tar", "k1"), f"{tmp_path}/a.tar"), ((f"{tmp_path}/c.tar", "k1"), f"{tmp_path}/a.tar"),
                ((f"{tmp_path}/c.tar", "k2"), f"{tmp_path}/a.tar")]
    for samples in (0, 7 * KEYS_PER_BUCKET):
        with beam.Pipeline() as p:
            found = (p | f"Shards{samples}" >> beam.Create([str(tmp_path / n) for n in ("c.tar", "a.tar", "b.tar")])
                     | f"Find{samples}" >> FindRepeatedKeys(list_keys, samples))
            assert_that(found, equal_to(expected))


def test_a_key_repeats_within_a_folder_and_ids_are_qualified_outside_the_first(tmp_path, monkeypatch):
    """Within a folder each shard holding a key but the first maps to that first one (spelt any
    way: ./a/y.tar lies in a/, after a/x.tar); shards of other folders that hold it are no
    repeat. The id for dedup is the key in the first folder by path, KEY (SHARD) in the others;
    with one folder, there is none. Through the pipeline's key shuffle, the same."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.repeated_keys import FindRepeatedKeys, dedup_id, first_folder, id_file
    from pipelines.webdataset_read import list_keys

    for name in ("a/x.tar", "a/y.tar", "b/z.tar", "c/w.tar", "c/v.tar"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_tar(tmp_path / name, [(f"{k}.jpg", b"x") for k in (["k", "j"] if name == "a/x.tar" else ["k"])])
    monkeypatch.chdir(tmp_path)
    shards = ["./a/y.tar", "a/x.tar", f"{tmp_path}/b/z.tar", "c/w.tar", "c/v.tar"]
    expected = {("./a/y.tar", "k"): "a/x.tar", ("c/w.tar", "k"): "c/v.tar"}
    assert webdataset_read.repeated_keys(shards) == expected
    first = first_folder(shards)
    assert first == str(tmp_path / "a") and first_folder(shards[:2]) is None
    assert [dedup_id("k", id_file(s, first)) for s in shards] == ["k", "k", *(f"k ({tmp_path}/{s})" for s in ("b/z.tar", "c/w.tar", "c/v.tar"))]
    with beam.Pipeline() as p:
        found = p | beam.Create(shards) | FindRepeatedKeys(list_keys)
        assert_that(found, equal_to(list(expected.items())))


@pytest.mark.parametrize("extra", [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
                         ids=["listed-by-the-launcher", "matched-by-the-workers"])
def test_names_that_are_not_utf8_are_failed_records(tmp_path, extra):
    """A file or shard whose name's bytes are not UTF-8 cannot travel through Beam as text: it is
    a failed record with its name escaped, and every other input is read."""
    photo = PHOTOS[0].read_bytes()
    files = tmp_path / "files"
    files.mkdir()
    (files / "ok.jpg").write_bytes(photo)
    with open(os.path.join(os.fsencode(files), b"caf\xe9.jpg"), "wb") as f:
        f.write(photo)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "ok.tar", [("k0.jpg", photo)])
    with open(os.path.join(os.fsencode(shards), b"s\xe9.tar"), "wb") as f:
        f.write((shards / "ok.tar").read_bytes())
    for src, fmt, failed_id, what in ((files, "files", f"{files}/caf\\xe9.jpg", "file"),
                                      (shards, "webdataset", f"{shards}/s\\xe9.tar#unreadable", "shard")):
        out = tmp_path / f"out-{fmt}"
        assert dedup_images.main(["--input", str(src), "--input-format", fmt, "--output", str(out),
                                  "--no-report", *STATE, *extra]) == 0
        (failed,) = read(out, "failed")
        assert failed["id" if fmt == "files" else "key"] == failed_id
        assert f"the {what}'s name is not UTF-8" in failed["error"], failed
        assert len(read(out, "kept")) == 1 and summary(out)["adds_up"]
