"""The main job: the bundled sample (both backends, in-process and multi-process), Parquet input
in the layouts of img2dataset/LAION and Hugging Face exports, the report, and one-line
configuration errors."""
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
from PIL import Image

import beam_phash
from conftest import DATA, PHOTOS, ROOT, buckets
from job_outputs import basename, read
from pipelines import arguments, dedup_images, input_items, inputs, parquet_read

MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
SAMPLE_GROUPS = {("skagen.jpg", "skagen_copy.jpg")}
#: The resized, re-encoded and converted copies of the sample, 1 to 9 bits from their originals
#: (hash version 9; JPEG quality 20 the furthest): exact mode keeps them.
SAMPLE_NEAR = {("snow.jpg", "snow_256px.jpg"), ("grand_canyon_1.jpg", "grand_canyon_1_256px.jpg"),
               ("pool.jpg", "pool_half_q40.jpg"), ("pool_2.jpg", "pool_2_q20.jpg"),
               ("sunset.jpg", "sunset_as_png.png"), ("jesper.jpg", "jesper_recompressed.jpg")}
EXACT_LINE = "16 images: 13 kept, 1 duplicates, 2 failed (adds up)"
AUTO_LINE = "16 images: 7 kept, 7 duplicates, 2 failed (adds up)"
HINT = ("Exact hashes caught 1 duplicates. 12 kept images lie within 16 bits (the --max-distance auto "
        "threshold) of another kept image: likely resized or re-encoded copies; --max-distance auto "
        "would drop about 6 more.")


def check_sample_output(out):
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    assert sorted(basename(r["id"]) for r in failed) == ["broken_truncated.jpg", "not_an_image.jpg"]
    assert all(r["error"] and r["image_phash"] is None for r in failed)
    assert len(kept) == 13 and len({r["image_phash"] for r in kept}) == 13
    assert {n for pair in SAMPLE_NEAR for n in pair} <= {basename(r["id"]) for r in kept}
    pairs = {tuple(sorted((basename(r["id"]), basename(r["duplicate_of"])))) for r in dups}
    assert pairs == SAMPLE_GROUPS
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (16, 13, 1, 2)
    assert summary["adds_up"] and summary["bits"] == 256 and summary["images_per_second"] > 0
    page = (out / "report.html").read_text()
    groups = page[page.index("Largest duplicate groups"):]
    assert groups.count('class="kept"') == 1 and groups.count('class="dup"') == 1  # 1 group of 2
    # the histogram: 14 hashed images, 1 dropped copy and its keeper at 0 bits, the 12 images of
    # the resized, re-encoded and converted pairs at 1, 2, 3, 4 and 9 bits; then example pairs at
    # 0, 2, 3, 4 and 9 bits and two unrelated photos beyond the range, each side by side
    distances = json.loads((out / "report" / "distances.json").read_text())
    assert distances["kept"][:11] == [1, 2, 4, 2, 2, 0, 0, 0, 0, 2, 0] and sum(distances["kept"]) == 13
    assert distances["dropped"][0] == 1 and sum(distances["dropped"]) == 1
    assert (distances["sampled"], distances["limit"], distances["auto"]) == (14, 32, 16)
    assert [p["distance"] for p in distances["pairs"]][:5] == [0, 2, 3, 4, 9] and distances["pairs"][5]["distance"] > 32
    assert "Which threshold? Distance to the nearest other image" in page and "For all 14 hashed images" in page
    assert page.count("<div class='pair'>") == 6 and page.count("<rect ") == 7  # bars at 0, 1, 2, 3, 4 and 9 bits, one of them stacked (kept and dropped at 0)
    assert page.count("data:image/jpeg;base64,") == 2 + 12
    assert page.count("<img ") == page.count('loading="lazy"') == 2 + 12
    assert "broken_truncated.jpg" in page and "truncated" in page and "not_an_image.jpg" in page


@pytest.mark.parametrize("backend", ["state", pytest.param("ray", marks=pytest.mark.ray)])
@pytest.mark.parametrize("extra", [[], MULTI], ids=["in-process", "multi-process"])
def test_sample_dataset(tmp_path, capfd, backend, extra, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
        capfd.readouterr()  # the fixture's own start-up lines are not the job's
    out = tmp_path / "out"
    assert dedup_images.main(["--output", str(out), "--backend", backend, *buckets(backend), *extra]) == 0
    check_sample_output(out)
    printed = capfd.readouterr()
    assert EXACT_LINE in printed.out and HINT in printed.out
    assert f"report: {out}/report.html" in printed.out
    # Quiet: only the job's own lines; Beam's and Ray's go to the log.
    assert all(line.startswith("beam-phash: ") for line in printed.err.splitlines()), printed.err
    log = (out / "logs" / "job.log").read_text()
    assert "apache_beam" in log and "WARNING" not in printed.out + printed.err
    # No --runner: the FnApiRunner directly, never the DirectRunner's attempt at Prism.
    assert "PrismRunner" not in log
    assert not list(out.glob(".tmp-*"))  # the Parquet writer's temporary files are gone


def shard_of_three(folder):
    """``folder`` (made here) holding one WebDataset shard, ``00000.tar``: the first three
    photos, one sample each, keyed by their stems."""
    folder.mkdir()
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for p in PHOTOS[:3]:
            tar.add(p, arcname=f"{p.stem}.jpg")
    return folder


def _jpeg(path, quality=None) -> bytes:
    if quality is None:
        return path.read_bytes()
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("layout", ["binary", "hf-struct", "binary_view"])
def test_parquet_input_keeps_the_input_columns(tmp_path, layout):
    """binary_view: Arrow's view type, which newer writers store; img2dataset's columns (jpg,
    key) are detected in it as in binary."""
    photos = [DATA / "pool.jpg", DATA / "snow.jpg", DATA / "chelsea.png", DATA / "pool.jpg"]
    rows = [{"key": f"k{i}", "caption": f"photo {i}", "jpg": p.read_bytes()} for i, p in enumerate(photos)]
    rows.append({"key": "k-bad", "caption": "broken", "jpg": b"\x89PNG not really"})
    if layout == "hf-struct":
        for r in rows:
            r["jpg"] = {"bytes": r["jpg"], "path": r["key"] + ".jpg"}
    src = tmp_path / "in"
    src.mkdir()
    # Two shards, as exports come.
    for name, part in (("part-0", rows[:3]), ("part-1", rows[3:])):
        table = pa.Table.from_pylist(part)
        if layout == "binary_view":
            table = table.set_column(2, "jpg", table.column("jpg").cast(pa.binary_view()))
        pq.write_table(table, src / f"{name}.parquet")
    out = tmp_path / "out"
    columns = [] if layout == "binary_view" else ["--image-column", "jpg", "--id-column", "key"]
    argv = ["--input", str(src), "--input-format", "parquet", *columns, "--output", str(out), "--backend", "state"]
    assert dedup_images.main(argv) == 0
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    kept_keys = {r["key"] for r in kept}
    assert kept_keys - {"k0", "k3"} == {"k1", "k2"} and len(kept_keys & {"k0", "k3"}) == 1
    (dup,) = dups
    assert {dup["key"], dup["duplicate_of"]} == {"k0", "k3"}
    for r in kept + dups:  # input columns kept, image bytes intact, hash added
        assert r["caption"].startswith("photo ") and r["image_phash"]
        data = r["jpg"]["bytes"] if layout == "hf-struct" else r["jpg"]
        assert data == photos[int(r["key"][1:])].read_bytes()
    (bad,) = failed
    assert bad["key"] == "k-bad" and bad["caption"] == "broken" and bad["error"]
    assert json.loads((out / "summary.json").read_text())["adds_up"]


def test_an_earlier_kept_read_as_images_points_to_its_hashes(tmp_path, capsys):
    """An earlier run's kept/ given as Parquet input holds the columns the job writes: refused,
    with the way to dedup it again (its hashes), which the error did not say."""
    out = tmp_path / "o1"
    assert dedup_images.main(["--output", str(out), "--backend", "state", "--no-report"]) == 0
    argv = ["--input", str(out / "kept"), "--input-format", "parquet", "--output", str(tmp_path / "o2"),
            "--backend", "state", "--no-report"]
    assert dedup_images.main(argv) == 2  # image files' kept/ holds no image column
    err = capsys.readouterr().err
    assert "--image-column 'image' is not a column of" in err and err.strip().endswith(
        "(columns: id, image_phash, image_quality) (an earlier run's output? dedup its hashes with --hash-column "
        "image_phash)"), err
    assert dedup_images.main(argv + ["--hash-column", "image_phash"]) == 0
    # Parquet input keeps its image column in kept/: read again as images, its columns collide.
    pq.write_table(pa.table({"id": ["a"], "image": [PHOTOS[0].read_bytes()]}), tmp_path / "in.parquet")
    first = ["--input", str(tmp_path / "in.parquet"), "--input-format", "parquet", "--backend", "state", "--no-report"]
    assert dedup_images.main([*first, "--output", str(tmp_path / "p1")]) == 0
    first[1] = str(tmp_path / "p1" / "kept")
    assert dedup_images.main([*first, "--output", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "the input already has column(s) image_phash, image_quality, which the job writes (an earlier run's " \
           "output? dedup its hashes with --hash-column image_phash)" in err, err


def test_a_folder_whose_files_lie_in_a_subfolder_says_so(tmp_path, capsys):
    """A Hugging Face dataset keeps its Parquet files in data/: the folder matched no files, and
    the error asked whether --input-format was right, which it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "hfds" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "image": [b"x"], "h": ["ab" * 32]}), tmp_path / "hfds" / "data" / "train.parquet")
    assert dedup_images.main(["--input", str(tmp_path / "hfds"), "--input-format", "parquet",
                              "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert ("holds 1 subfolder(s), which are not read: are the files in a subfolder (give it, or "
            f"'{tmp_path / 'hfds' / '**.parquet'}' for all of them)?") in err, err
    assert "--input-format right" not in err
    # The library's refusal, in the flags' names.
    assert dedup_images.main(["--input", str(tmp_path / "hfds" / "data"), "--input-format", "parquet",
                              "--hash-column", "h", "--dihedral", "--output", str(tmp_path / "o")]) == 2
    assert ("--dihedral needs the images (their rotations are hashed); it cannot be used with --hash-column"
            in capsys.readouterr().err)


@pytest.mark.parametrize("files, message", [
    (["00000.tar", "00000.parquet", "00000_stats.json"], "holds 1 WebDataset shard(s) and no image files: give --input-format webdataset"),
    (["00000.parquet", "00000_stats.json", "00001.parquet"], "holds 2 Parquet file(s) and no image files: give --input-format parquet"),
    (["a.tar.gz"], "give --input-format webdataset"),
])
def test_img2dataset_output_read_as_image_files_is_refused(tmp_path, capsys, files, message):
    """img2dataset's output folder without --input-format was read as that many images failing
    to decode, and the run ended with 0 kept and exit code 0."""
    src = tmp_path / "crawl"
    src.mkdir()
    for name in files:
        (src / name).write_bytes(b"x")
    assert dedup_images.main(["--input", str(src), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    # With an image among them, the folder is image files: each other file a failed record.
    (src / "a.jpg").write_bytes(PHOTOS[0].read_bytes())
    assert dedup_images.main(["--input", str(src), "--output", str(tmp_path / "o"), "--backend", "state",
                              "--no-report"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--input", "/nonexistent/dir/*.jpg"], "matched no files"),
    (["--output", "/proc/forbidden"], "is not writable"),
    (["--hash-size", "2"], "--hash-size must be between"),  # the library's check, said with the flags
    (["--backend", "state", "--max-distance", "auto"], "runs on Beam's shuffles: --backend, --ray-address"),
    (["--backend", "state", "--state", "st"], "--state and --num-actors apply only to --backend ray"),
    (["--keep", "smallest_id"], "--keep applies with --max-distance"),
    (["--num-buckets", "4", "--max-distance", "8"], "--num-buckets applies to exact mode with the Ray backend only"),
    (["--num-buckets", "4", "--backend", "state"], "--num-buckets applies to exact mode with the Ray backend only"),
    (["--band-partition-bits", "2"], "--band-partition-bits applies to near-duplicate mode (--max-distance) only"),
    (["--search-partitions", "2", "--backend", "state"], "--search-partitions applies to near-duplicate mode"),
    (["--backend", "redis"], "argument --backend: invalid choice"),
    (["--hash-size", "big"], "argument --hash-size: invalid int value"),
    (["--max-decode-failures", "5"], "argument --max-decode-failures: expected a fraction between 0 and 1, got '5'"),
    (["--max-internal-failures", "nan"], "argument --max-internal-failures: expected a fraction between 0 and 1"),
    (["--input-format", "parquet"], "matched no files (a directory means "),  # the sample folder holds no .parquet
    (["--reference", str(DATA), "--reference-format", "webdataset"], "file(s); is --reference-format right?"),
    (["--image-column", "jpg"], "apply to --input-format parquet"),
    (["--reference", str(DATA), "--reference-image-column", "jpg"],
     "--reference-image-column and --reference-id-column apply to Parquet references (these are image files)"),
    (["--reference", str(DATA), "--reference-id-column", "key"], "apply to Parquet references"),
    (["--hash_size", "8"], "unknown option --hash_size (did you mean --hash-size?)"),
    (["--direct_num_workerz=2"], "unknown option --direct_num_workerz"),
    (["--direct-num-workers=2"], "unknown option --direct-num-workers (did you mean --direct_num_workers?)"),
])
def test_configuration_errors_are_one_line(tmp_path, capsys, args, message):
    argv = ["--output", str(tmp_path / "o"), *args]
    assert dedup_images.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_beam_flags_are_taken_as_typed():
    """Beam's flags as typed, many of them not their option's name: `--extra_package` (the
    README's Dataflow command) sets `extra_packages`, `--experiment` `experiments`,
    `--no_use_public_ips` `use_public_ips`. Each was refused as an unknown option."""
    flags = ["--extra_package=dist/x.whl", "--experiment=use_runner_v2", "--no_use_public_ips",
             "--environment_option=docker_container_image=x", "--worker_machine_type=n2-standard-4",
             "--dataflow_service_option=enable_prime", "--label=k=v", "--resource_hint=min_ram=4GB",
             "--no_save_main_session", "--extra_packages=dist/y.whl", "--runner=DirectRunner",
             "--direct_num_workers=2", "--setup_file=./setup.py", "--s3_endpoint_url=http://127.0.0.1:1"]
    arguments.check_beam_options(flags)
    options = PipelineOptions(flags).get_all_options()
    assert options["extra_packages"] == ["dist/x.whl", "dist/y.whl"] and options["use_public_ips"] is False


def test_a_backend_name_without_a_ray_address_is_refused_on_the_command_line(tmp_path):
    """The command's embedded Ray stops with it, and a named backend with it: --backend-name
    was accepted and did nothing (a later run kept everything again). A caller's process keeps
    its Ray, and the named backend in it, for its later jobs: there it is taken."""
    argv = ["--output", str(tmp_path / "o"), "--backend-name", "catalog"]
    with pytest.raises(inputs.ConfigError, match="--backend-name applies with --ray-address only"):
        dedup_images.configure(argv, command_line=True)
    assert dedup_images.configure(argv)[2].dedup.backend.backend_name == "catalog"
    for other in (["--backend", "state"], ["--max-distance", "8"]):  # refused by the library, as before
        with pytest.raises(ValueError, match="--backend-name|backend_name") as refused:
            dedup_images.configure([*argv, *other], command_line=True)
        assert "--ray-address only" not in str(refused.value)


@pytest.mark.parametrize("inputs, output", [
    (["--input", "{d}"], "{d}"),
    (["--input", "{d}/**"], "{d}/out"),
    (["--input", "{d}", "--reference", "{d}/out/kept"], "{d}/out"),
    (["--input", "{d}", "--reference", "{d}/out/kept/part-*.parquet"], "{d}/out"),
    # through symbolic links: the same folders under other names
    (["--input", "{link}"], "{d}"),
    (["--input", "{d}", "--reference", "{link}/out/kept"], "{d}/out"),
    (["--input", "{d}/a.jpg", "--reference", "{d}/out/kept"], "{link}/out"),
])
def test_an_output_the_inputs_would_read_is_refused(tmp_path, capsys, inputs, output):
    """The job clears and writes files under --output: a pattern matching them would read this
    run's own outputs (or clear a reference before reading it)."""
    d = tmp_path / "in"
    (d / "out" / "kept").mkdir(parents=True)
    (d / "a.jpg").write_bytes(sorted(DATA.glob("*.jpg"))[0].read_bytes())
    pq.write_table(pa.Table.from_pylist([{"id": "x", "image_phash": "00" * 32}]), d / "out" / "kept" / "part-00000-of-00001.parquet")
    link = tmp_path / "link"
    link.symlink_to(d)
    argv = [a.format(d=d, link=link) for a in inputs] + ["--output", output.format(d=d, link=link), "--backend",
                                                          "state", "--no-report"]
    assert dedup_images.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "would read what this job writes under --output" in err and "\n" not in err
    # a folder is read without its subfolders: an output inside it is apart from it
    assert dedup_images.main(["--input", str(d), "--output", str(d / "out"), "--backend", "state", "--no-report"]) == 0


@pytest.mark.parametrize("given", [["--reference", "{out}/kept/*.parquet"], ["--reference", "{out}/kept"],
                                   ["--input-format", "parquet", "--hash-column", "image_phash",
                                    "--input", "{out}/kept/*.parquet", "--input", "{out}/kept/part-00000-of-00002.parquet"]],
                         ids=["reference-glob", "reference-folder", "overlapping-inputs"])
def test_an_earlier_run_s_parts_read_from_the_output_are_refused(tmp_path, capsys, given):
    """The check tested the patterns against one sample name per folder (part-00000-of-00001),
    and the files matched by name are literal patterns: a kept/ of two parts passed it, and the
    job cleared the earlier run's kept/ before reading it as the reference."""
    out = tmp_path / "out"
    (out / "kept").mkdir(parents=True)
    for i in range(2):
        pq.write_table(pa.Table.from_pylist([{"id": f"x{i}", "image_phash": f"{i:02x}" * 32}]),
                       out / "kept" / f"part-0000{i}-of-00002.parquet")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(PHOTOS[0].read_bytes())
    argv = [a.format(out=out) for a in given]
    if "--input" not in argv:
        argv = ["--input", str(src)] + argv
    assert dedup_images.main(argv + ["--output", str(out), "--backend", "state", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "would read what this job writes under --output" in err and "\n" not in err
    assert sorted(os.listdir(out / "kept")) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]


@pytest.mark.parametrize("fmt", ["files", "webdataset"])
def test_a_reference_folder_s_entries_beam_does_not_list_are_failed_references(tmp_path, fmt):
    """The references were matched again from their patterns, not read from the launcher's
    listing as the inputs are: a symbolic link to nothing among image references was neither
    read nor failed (the run did not add up), and a shard so linked was dropped silently."""
    ref = tmp_path / "ref"
    ref.mkdir()
    photo = PHOTOS[0].read_bytes()
    if fmt == "files":
        (ref / "ok.jpg").write_bytes(photo)
        (ref / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    else:
        with tarfile.open(ref / "00000.tar", "w") as tar:
            member = tarfile.TarInfo("00000.jpg")
            member.size = len(photo)
            tar.addfile(member, io.BytesIO(photo))
        (ref / "00001.tar").symlink_to(tmp_path / "nowhere.tar")
    src = tmp_path / "in"
    src.mkdir()
    (src / "copy.jpg").write_bytes(photo)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    assert [r["id"] for r in read(out, "duplicates")] == [str(src / "copy.jpg")]
    (gone,) = read(out, "reference_failed")
    assert "nowhere" in gone["error"] or "No such file" in gone["error"], gone
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["adds_up"], summary["reference"]["references"], summary["reference"]["failed"]) == (True, 1, 1)


@pytest.mark.parametrize("form", ["folder", "glob"])
@pytest.mark.parametrize("extra", [[], MULTI], ids=["in-process", "multi-process"])
def test_a_folder_s_entries_beam_does_not_list_are_inputs_still(tmp_path, extra, form):
    """Beam's local listing drops a symbolic link to nothing or in a loop, and a name holding a
    backslash: the links are failed records with their reasons, the name is read, and the run
    adds up over all, also where the workers, not the launcher, read the inputs; given as the
    folder or as a glob over it. (A link in a loop stopped the run: the folder "cannot be
    listed"; the glob left all three out without a word.)"""
    src = tmp_path / "in"
    src.mkdir()
    photos = sorted(DATA.glob("*.jpg"))[:2]
    (src / "a.jpg").write_bytes(photos[0].read_bytes())
    (src / "back\\slash.jpg").write_bytes(photos[1].read_bytes())
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (src / "loop.jpg").symlink_to(src / "loop.jpg")
    out = tmp_path / "out"
    given = str(src) if form == "folder" else str(src / "*.jpg")
    assert dedup_images.main(["--input", given, "--output", str(out), "--backend", "state", "--no-report",
                              *extra]) == 0
    assert sorted(os.path.basename(r["id"]) for r in read(out, "kept")) == ["a.jpg", "back\\slash.jpg"]
    gone, loop = sorted(read(out, "failed"), key=lambda r: r["id"])
    assert gone["id"].endswith("gone.jpg") and "No such file" in gone["error"], gone
    assert loop["id"].endswith("loop.jpg") and "Too many levels of symbolic links" in loop["error"], loop
    assert json.loads((out / "summary.json").read_text())["adds_up"] is True


@pytest.mark.parametrize("glob", ["**", "*/*.jpg"])
@pytest.mark.parametrize("extra", [[], MULTI], ids=["in-process", "multi-process"])
def test_a_deep_glob_goes_into_linked_folders_once(tmp_path, extra, glob):
    """A dataset assembled from links (`data/coco -> /mnt/coco`): Beam's local match does not
    follow a link to a folder, so `'data/**'` and `'data/*/*.jpg'` left the linked folder's
    photos out, and the run added up without them. The job's own walk goes into it as the
    shell's glob does, once (a link back up does not loop), real folders first, and a link to
    nothing is a failed record; also where the workers read the inputs."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "real").mkdir(parents=True)
    elsewhere.mkdir()
    (data / "real" / "a.jpg").write_bytes(PHOTOS[0].read_bytes())
    (elsewhere / "b.jpg").write_bytes(PHOTOS[1].read_bytes())
    (data / "linked").symlink_to(elsewhere)
    (data / "real" / "up").symlink_to(data)  # a loop
    (data / "zz_again").symlink_to(data / "real")  # a second way to real/: read once, as real/
    (data / "aa").mkdir()
    (data / "aa" / "alias").symlink_to(data / "real")  # met before real/ itself: still read as real/
    (data / "real" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(data / glob), "--output", str(out), "--backend", "state",
                              "--no-report", *extra]) == 0
    kept = sorted(os.path.relpath(r["id"], data) for r in read(out, "kept"))
    assert kept == ["linked/b.jpg", "real/a.jpg"], kept
    (gone,) = read(out, "failed")
    assert os.path.relpath(gone["id"], data) == "real/gone.jpg" and "No such file" in gone["error"], gone
    assert json.loads((out / "summary.json").read_text())["adds_up"] is True


@pytest.mark.parametrize("path, pattern, shown", [
    ("in/.DS_Store", "in/*", ".DS_Store"),
    ("in/._a.jpg", "in/*.jpg", "._a.jpg"),
    ("./._a.jpg", "./*.jpg", "._a.jpg"),
    ("gs://b/x/.git/a.jpg", "gs://b/**", "x/.git/a.jpg"),
    ("gs://b/x/.git/a.jpg", "gs://b/*/*/a.jpg", "x/.git/a.jpg"),
    ("in/a.jpg", "in/*", None),
    ("in/a.b.jpg", "in/*", None),
    ("in/.DS_Store", "in/.*", None),  # the pattern spells the dot
    ("in/._a.jpg", "in/._*", None),
    (".cache/in/a.jpg", ".cache/in/*", None),  # above the wildcards: the folder given
    ("in/.a.jpg", "in/.a.jpg", None),  # a file named alone
    ("in/.a[1].jpg", "in/.a[[]1].jpg", None),  # a file named alone, its brackets escaped
    ("in/a[1].jpg", "in/a[[]1].jpg", None),
])
def test_hidden_names_are_those_the_wildcards_took(path, pattern, shown):
    from pipelines.input_paths import hidden_part

    assert hidden_part(path, pattern) == shown


def test_a_remote_folder_of_hidden_files_only_says_so(monkeypatch):
    """A remote name without its '/' is read as the folder it names when no object has it: a
    folder of hidden files only says that, not that the name matched no files."""
    held = {"s3://b/in/.DS_Store": 4, "s3://b/in/._a.jpg": 4}

    def match(pattern, item, flag="--input"):
        found = {p: n for p, n in held.items() if p.startswith(pattern.rstrip("*"))} if pattern.endswith("/*") else {}
        if not found:
            raise input_items.NoMatch(f"{flag} {item!r} matched no files")
        return found

    monkeypatch.setattr(input_items, "_match", match)
    monkeypatch.setattr(input_items, "_refuse_an_output", lambda folder, flag: None)
    for given in ("s3://b/in", "s3://b/in/"):
        with pytest.raises(input_items.OnlyHidden, match="matched hidden files only \\(2, such as"):
            inputs.resolve([given], "files")


def _with_macos_companions(folder):
    """Beside each file of ``folder``, the `._NAME` AppleDouble file macOS writes on a foreign
    disk (it starts with 0x00051607), and a `.DS_Store`."""
    for path in sorted(folder.iterdir()):
        (folder / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))


@pytest.mark.parametrize("form", ["folder", "glob"])
@pytest.mark.parametrize("fmt", ["files", "parquet", "webdataset"])
def test_hidden_files_beside_the_inputs_are_passed_over_and_said(tmp_path, capsys, fmt, form):
    """A folder copied from a Mac holds `._NAME` beside every file and a `.DS_Store`: they were
    read as inputs (image files failing to decode, a shard `#unreadable`, a Parquet file that
    stopped the run). They are passed over, as the shell's `*` passes them over, said on the
    start line and counted in the summary; `DIR/.*` reads them."""
    src = tmp_path / "in"
    src.mkdir()
    photos = [p.read_bytes() for p in PHOTOS[:2]]
    if fmt == "files":
        for i, photo in enumerate(photos):
            (src / f"p{i}.jpg").write_bytes(photo)
    elif fmt == "parquet":
        pq.write_table(pa.table({"id": ["p0", "p1"], "image": photos}), src / "00000.parquet")
    else:
        with tarfile.open(src / "00000.tar", "w") as tar:
            for i, photo in enumerate(photos):
                member = tarfile.TarInfo(f"p{i}.jpg")
                member.size = len(photo)
                tar.addfile(member, io.BytesIO(photo))
    _with_macos_companions(src)
    # (a Parquet folder means DIR/*.parquet, which matches ._00000.parquet but not .DS_Store)
    hidden_count = 1 if (fmt, form) == ("parquet", "folder") else len(list(src.glob(".*")))
    given = str(src) if form == "folder" else str(src / "*")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", given, "--input-format", fmt, "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert f"--input passed over {hidden_count} hidden file" in err and "'DIR/.*'" in err, err
    assert len(read(out, "kept")) == 2 and read(out, "failed") == []
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["adds_up"], summary["inputs"], summary["hidden_files"]) == (True, 2, hidden_count)
    if fmt == "files":  # spelt, the dot takes them: read, and failing as images
        assert dedup_images.main(["--input", str(src / ".*"), "--output", str(out), "--backend", "state",
                                  "--no-report"]) == 0
        assert len(read(out, "failed")) == hidden_count and "passed over" not in capsys.readouterr().err


def test_hidden_files_are_passed_over_on_workers_and_in_references(tmp_path, capsys):
    """On several worker processes (which read the launcher's listing by name once it passed
    over some), and in a --reference folder, whose format is told past its `.DS_Store`; a
    folder of hidden files only is refused in one line."""
    src, ref = tmp_path / "in", tmp_path / "ref"
    src.mkdir()
    ref.mkdir()
    for i, photo in enumerate(PHOTOS[:3]):
        (src / f"p{i}.jpg").write_bytes(photo.read_bytes())
    with tarfile.open(ref / "00000.tar", "w") as tar:
        member = tarfile.TarInfo("r0.jpg")
        member.size = PHOTOS[0].stat().st_size
        tar.addfile(member, io.BytesIO(PHOTOS[0].read_bytes()))
    _with_macos_companions(src)
    _with_macos_companions(ref)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--output", str(out),
                              "--backend", "state", "--no-report", *MULTI]) == 0
    err = capsys.readouterr().err
    assert "--input passed over 4 hidden files (" in err and "--reference passed over 2 hidden files (" in err, err
    assert sorted(basename(r["id"]) for r in read(out, "kept")) == ["p1.jpg", "p2.jpg"]
    assert [basename(r["id"]) for r in read(out, "duplicates")] == ["p0.jpg"] and read(out, "failed") == []
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["adds_up"], summary["hidden_files"], summary["reference"]["hidden_files"]) == (True, 4, 2)
    assert summary["reference"]["format"] == "webdataset" and summary["reference"]["failed"] == 0
    # A reference glob, whose matches the format's detection names one by one; and a file in a
    # hidden folder, under '**'.
    (src / ".thumbs").mkdir()
    (src / ".thumbs" / "p0.jpg").write_bytes(PHOTOS[0].read_bytes())
    assert dedup_images.main(["--input", str(src / "**"), "--reference", str(ref / "*"), "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "--input passed over 5 hidden files (.DS_Store, ._p0.jpg, ._p1.jpg, ...)" in err, err
    assert "--reference passed over 2 hidden files (" in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["adds_up"], summary["hidden_files"], summary["reference"]["hidden_files"]) == (True, 5, 2)
    only = tmp_path / "only"
    only.mkdir()
    (only / ".DS_Store").write_bytes(b"Bud1")
    assert dedup_images.main(["--input", str(only), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "matched hidden files only (1, such as '.DS_Store')" in err and "\n" not in err, err


def test_subfolders_a_folder_s_listing_does_not_read_are_said(tmp_path, capsys):
    """A Kaggle folder: labels.csv beside one subfolder per class. Given as the folder, only the
    csv was read, and the run added up without a word of the photos in cat/ and dog/. The
    subfolders are said on the start line and counted in the summary (a hidden one is not),
    except those another input reads; 'DIR/**' reads them."""
    train = tmp_path / "train"
    for label, photo in (("cat", PHOTOS[0]), ("dog", PHOTOS[1]), (".git", PHOTOS[2])):
        (train / label).mkdir(parents=True)
        (train / label / photo.name).write_bytes(photo.read_bytes())
    (train / "labels.csv").write_text("file,label\n")
    (train / "empty").mkdir()  # holds nothing: not said
    out = train / "dedup"  # the job's own output, inside its input: not said as unread
    out.mkdir()
    assert dedup_images.main(["--input", str(train), "--output", str(out), "--backend", "state", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert (f"--input passed over 2 subfolders ({train}/cat/, {train}/dog/): a folder's own files are read, "
            f"not its subfolders'; give '{train}/**' to read them too") in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["failed"], summary["subfolders_not_read"]) == (1, 1, 2)
    assert dedup_images.main(["--input", str(train), "--input", str(train / "cat"), "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    assert f"--input passed over 1 subfolder ({train}/dog/)" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["subfolders_not_read"] == 1
    out = tmp_path / "out"  # (under a '**' input it would be refused: the run would read it)
    assert dedup_images.main(["--input", str(train / "**"), "--output", str(out), "--backend", "state",
                              "--no-report"]) == 0
    assert "passed over 1 hidden file (.git/" in (err := capsys.readouterr().err) and "subfolders'" not in err, err
    assert sorted(basename(r["id"]) for r in read(out, "kept")) == sorted(p.name for p in PHOTOS[:2])
    assert json.loads((out / "summary.json").read_text())["subfolders_not_read"] == 0
    assert input_items.deep_glob(str(train), input_items.folder_names("parquet")) == f"{train}/**.parquet"
    # Parquet: a subfolder of images beside the files (which their rows' paths may name) is not
    # said, one with Parquet files or folders in it is
    hf = tmp_path / "hf"
    for folder in ("images", "more", "nested/deeper"):
        (hf / folder).mkdir(parents=True)
    (hf / "images" / "0.jpg").write_bytes(PHOTOS[0].read_bytes())
    for path in (hf / "a.parquet", hf / "more" / "b.parquet"):
        pq.write_table(pa.table({"id": [path.stem], "image": [PHOTOS[1].read_bytes()]}), path)
    assert dedup_images.main(["--input", str(hf), "--input-format", "parquet", "--output", str(tmp_path / "o2"),
                              "--backend", "state", "--no-report"]) == 0
    assert (f"--input passed over 2 subfolders ({hf}/more/, {hf}/nested/)") in (err := capsys.readouterr().err), err


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("fmt", ["files", "parquet", "webdataset"])
def test_a_file_named_like_a_pattern_is_read_as_itself(tmp_path, monkeypatch, fmt, relative):
    """`x[1].jpg` given by name is that file, not x1.jpg beside it (Beam's match would read the
    brackets as a set), for image files, Parquet and shards alike; also by its bare name, from
    its own folder (the pattern that stands for it then has no folder part), and a bare glob
    there reads both files."""
    import tarfile

    first, other = sorted(DATA.glob("*.jpg"))[:2]
    ext = {"files": ".jpg", "parquet": ".parquet", "webdataset": ".tar"}[fmt]

    def write(path, photo):
        if fmt == "files":
            path.write_bytes(photo.read_bytes())
        elif fmt == "parquet":
            pq.write_table(pa.table({"id": [photo.stem], "image": [photo.read_bytes()]}), path)
        else:
            with tarfile.open(path, "w") as tar:
                tar.add(photo, arcname=f"{photo.stem}.jpg")

    src = tmp_path / "in"
    src.mkdir()
    write(src / f"x[1]{ext}", first)
    write(src / f"x1{ext}", other)
    out = tmp_path / "out"
    if relative:
        monkeypatch.chdir(src)
    folder = "./" if relative else f"{src}/"
    given = f"x[1]{ext}" if relative else str(src / f"x[1]{ext}")
    assert dedup_images.main(["--input", given, "--input-format", fmt, "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    (kept,) = read(out, "kept")
    expected = {"files": folder + "x[1].jpg", "parquet": first.stem, "webdataset": first.stem}[fmt]
    assert kept["key" if fmt == "webdataset" else "id"] == expected
    if relative:
        both = tmp_path / "both"
        assert dedup_images.main(["--input", f"*{ext}", "--input-format", fmt, "--output", str(both),
                                  "--backend", "state", "--no-report", "--reference", f"x[1]{ext}"]) == 0
        # x[1]'s photo is the reference's: only x1's is kept
        (kept,) = read(both, "kept")
        assert kept["key" if fmt == "webdataset" else "id"] == (
            {"files": "./x1.jpg", "parquet": other.stem, "webdataset": other.stem}[fmt])


@pytest.mark.parametrize("extra", [[], MULTI], ids=["in-process", "multi-process"])
def test_parquet_without_an_id_column_gets_file_and_row_ids(tmp_path, extra):
    """A Hugging Face export has an image and a label, no id: the run was refused, and a user
    who then gave --id-column label had every row of a label kept as a retry of one id. Each row's
    id is now FILE#ROW, its row number counted across row groups and spans; the same in an input
    and a reference, and where row groups are read by several workers."""
    data, ref = tmp_path / "data", tmp_path / "ref"
    data.mkdir()
    ref.mkdir()
    photos = [p.read_bytes() for p in PHOTOS[:5]]
    image = lambda b: {"bytes": b, "path": None}  # noqa: E731 - Hugging Face's Image layout
    files = {"train-00000-of-00002.parquet": [0, 1, 2], "train-00001-of-00002.parquet": [3, 0, 4]}
    for name, which in files.items():
        table = pa.table({"image": [image(photos[i]) for i in which], "label": [i % 2 for i in which]})
        pq.write_table(table, data / name, row_group_size=2)  # rows 0-1, then 2
    pq.write_table(pa.table({"image": [image(photos[4])], "label": [7]}), ref / "test.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(data), "--input-format", "parquet", "--reference", str(ref),
                              "--output", str(out), "--backend", "state", "--no-report", *extra]) == 0
    first, second = (str(data / name) for name in files)
    # photo 0 is in both files (exact mode keeps whichever reaches the backend first), photo 4
    # is the reference's
    copies = {f"{first}#0", f"{second}#1"}
    kept = {r["id"]: r["label"] for r in read(out, "kept")}
    assert kept.keys() - copies == {f"{first}#1", f"{first}#2", f"{second}#0"} and len(kept.keys() & copies) == 1
    assert kept[f"{first}#1"] == 1 and kept[f"{second}#0"] == 1, kept
    dups = {r["id"]: (r["duplicate_of"], r["matched"]) for r in read(out, "duplicates")}
    (copy,) = copies - kept.keys()
    assert dups == {copy: ((copies - {copy}).pop(), "input"),
                    f"{second}#2": (f"{ref}/test.parquet#0", "reference")}, dups
    assert json.loads((out / "summary.json").read_text())["adds_up"] is True


@pytest.mark.parametrize("extra", [[], MULTI], ids=["in-process", "multi-process"])
def test_hugging_face_rows_that_hold_only_a_path_are_read_from_it(tmp_path, capsys, extra):
    """datasets' Dataset.to_parquet does not embed a local image folder's files: each row's image
    is {bytes: null, path: the file's absolute path}. Every such row was a failed record (exit 0,
    nothing deduplicated). Now the file at the path is read: an absolute path or URI as it is, a
    relative one in the Parquet file's folder; a file that cannot be read is a failed record
    saying which; the kept rows carry the bytes read. The same in a reference."""
    photos, data, ref = tmp_path / "photos", tmp_path / "data", tmp_path / "ref"
    for d in (photos, data / "img", ref):
        d.mkdir(parents=True)
    for i, p in enumerate(PHOTOS[:4]):
        (photos / f"p{i}.jpg").write_bytes(p.read_bytes())
    (data / "img" / "copy.jpg").write_bytes(PHOTOS[1].read_bytes())
    rows = [{"bytes": None, "path": str(photos / "p0.jpg")},       # absolute
            {"bytes": None, "path": "img/copy.jpg"},               # relative: data/img/copy.jpg, photo 1
            {"bytes": None, "path": str(photos / "p1.jpg")},
            {"bytes": PHOTOS[0].read_bytes(), "path": "p0.jpg"},   # embedded, as push_to_hub writes
            {"bytes": None, "path": str(photos / "gone.jpg")},     # no such file
            {"bytes": None, "path": str(photos / "p2.jpg")}]       # the reference's photo
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the Image feature's type
    pq.write_table(pa.table({"image": pa.array(rows, image), "label": list(range(len(rows)))}),
                   data / "train.parquet", row_group_size=4)
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": "../photos/p2.jpg"},
                                                {"bytes": None, "path": "nowhere.jpg"}], image)}), ref / "test.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(data), "--input-format", "parquet", "--reference", str(ref),
                              "--output", str(out), "--backend", "state", "--no-report", *extra]) == 0
    train = str(data / "train.parquet")
    kept = {int(r["id"].rsplit("#", 1)[1]): r["image"] for r in read(out, "kept")}
    dups = {int(r["id"].rsplit("#", 1)[1]): r["matched"] for r in read(out, "duplicates")}
    # photo 0 (rows 0, 3) and photo 1 (rows 1, 2) each kept once, whichever reaches the backend first
    assert len(kept.keys() & {0, 3}) == 1 and len(kept.keys() & {1, 2}) == 1 and len(kept) == 2, kept
    assert dups == {**{r: "input" for r in {0, 1, 2, 3} - kept.keys()}, 5: "reference"}, dups
    for row, image in kept.items():  # the bytes read travel with the row
        assert image["bytes"] == PHOTOS[0 if row in (0, 3) else 1].read_bytes() and image["path"] == rows[row]["path"]
    (failed,) = read(out, "failed")
    assert failed["id"] == f"{train}#4" and "gone.jpg" in failed["error"] and "FileNotFoundError" in failed["error"]
    (ref_failed,) = read(out, "reference_failed")
    assert ref_failed["id"] == f"{ref}/test.parquet#1", ref_failed
    assert f"in the Parquet file's folder: {ref}/nowhere.jpg" in ref_failed["error"]
    assert json.loads((out / "summary.json").read_text())["adds_up"] is True
    assert "subfolder" not in capsys.readouterr().err  # data/img/ holds images, no Parquet file


def test_an_id_column_that_repeats_is_said(tmp_path, capsys):
    """A label given as --id-column: rows that share a label were taken as retries of one record
    without a word, so copies among them were all kept. The start line says so, naming a value
    and two of its rows in the first row group; a unique column says nothing."""
    photos = [p.read_bytes() for p in PHOTOS[:3]]
    pq.write_table(pa.table({"image": [photos[0], photos[1], photos[0], photos[2]], "label": ["cat", "dog", "cat", "dog"],
                             "uid": ["a", "b", "c", "d"]}), tmp_path / "train.parquet")
    for column, said in (("label", True), ("uid", False)):
        out = tmp_path / f"out-{column}"
        assert dedup_images.main(["--input", str(tmp_path / "train.parquet"), "--input-format", "parquet",
                                  "--id-column", column, "--output", str(out), "--backend", "state",
                                  "--no-report"]) == 0
        err = capsys.readouterr().err
        warning = (f"--input's id column 'label' is not unique: it holds 'cat' (rows 0 and 2 of {tmp_path}/train.parquet, "
                   "and 1 other value); rows that share an id are taken as retries of one record, so copies among them "
                   "are all kept: give --id-column a column of unique values, or none (each row's id is then FILE#ROW)")
        assert (warning in err) is said, err
    # the two 'cat' rows are one photo: with the label as id both are kept, with uid one
    assert len(read(tmp_path / "out-label", "kept")) == 4 and len(read(tmp_path / "out-uid", "kept")) == 3


def _crawl(folder, keys, images, kind=pa.string()):
    """An img2dataset Parquet output: a file per list of ``keys`` (typed ``kind``), their images."""
    folder.mkdir()
    for shard, (k, i) in enumerate(zip(keys, images)):
        ids = pa.array(k, kind.value_type if pa.types.is_dictionary(kind) else kind)
        pq.write_table(pa.table({"key": ids.dictionary_encode() if pa.types.is_dictionary(kind) else ids,
                                 "jpg": pa.array(i, pa.binary()), "status": ["success"] * len(k),
                                 "error_message": pa.array([None] * len(k), pa.string())}),
                       folder / f"{shard:05d}.parquet")


@pytest.mark.parametrize("extra", [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
                         ids=["one-worker", "two-workers"])
def test_two_crawls_whose_keys_overlap_are_deduplicated_together(tmp_path, capsys, extra):
    """Two img2dataset runs given as --input number their keys alike. Each key of the second was
    taken as a retry of the first's, so a photo both crawls fetched under one key was kept twice
    (until 2026-12-07, with a warning). An id need be unique only within its folder's files: a
    photo both crawls fetched is one keeper, whichever keys it has, and a keeper of any folder
    but the first by path is named KEY (FILE)."""
    photos = [p.read_bytes() for p in PHOTOS[:4]]
    _crawl(tmp_path / "a", [["000000000", "000000001"], ["000000002"]], [[photos[0], photos[1]], [photos[2]]])
    # the same photo under the same key, a new photo under a key of a's, and a's second photo again
    _crawl(tmp_path / "b", [["000000000", "000000001"], ["000000007"]], [[photos[0], photos[3]], [photos[1]]])
    _crawl(tmp_path / "b" / "c", [["000000001"]], [[photos[3]]])  # a third folder: b's copy of 3
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(tmp_path / "b"), "--input", str(tmp_path / "a"),
                              "--input", str(tmp_path / "b" / "c"), "--input-format", "parquet",
                              "--output", str(out), "--backend", "state", "--no-report", *extra]) == 0
    assert "not unique" not in capsys.readouterr().err
    kept, dups = read(out, "kept"), read(out, "duplicates")
    assert sorted(r["jpg"] for r in kept) == sorted(photos) and read(out, "failed") == []
    assert len(dups) == 3, dups
    ids = {}  # the oracle: a is first by path, so the rows of b and b/c are KEY (FILE)
    for folder in ("a", "b", "b/c"):
        for path in sorted((tmp_path / folder).glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                ids.setdefault(row["jpg"], set()).add(row["key"] if folder == "a" else f"{row['key']} ({path})")
    for photo, held in ids.items():  # each photo's copies all name one of its ids
        named = {d["duplicate_of"] for d in dups if d["jpg"] == photo}
        assert len(held) == 1 + sum(d["jpg"] == photo for d in dups) and len(named) <= 1 and named <= held, (held, dups)
    # duplicate_of joins to kept/'s dedup_id, the id each row was deduplicated under
    assert {d["duplicate_of"] for d in dups} <= {k["dedup_id"] for k in kept}
    assert all(r["dedup_id"] in ids[r["jpg"]] for r in kept + dups), kept + dups
    (named,) = {d["duplicate_of"] for d in dups if d["jpg"] == photos[3]}
    assert named in (f"000000001 ({tmp_path}/b/00000.parquet)", f"000000001 ({tmp_path}/b/c/00000.parquet)"), named
    if extra:
        return
    # kept/ read again may hold both crawls' keys: its dedup_id column tells them apart, and the
    # start line points to it where the keys repeat
    again = ["--input", str(out / "kept"), "--input-format", "parquet", "--hash-column", "image_phash",
             "--backend", "state", "--no-report"]
    assert dedup_images.main([*again, "--output", str(tmp_path / "again-2"), "--id-column", "dedup_id"]) == 0
    assert "not unique" not in capsys.readouterr().err
    pq.write_table(pa.table({"key": ["000000001", "000000001"], "dedup_id": ["000000001", "000000001 (/x/0.parquet)"],
                             "jpg": [photos[0], photos[1]]}), tmp_path / "both.parquet")
    assert dedup_images.main(["--input", str(tmp_path / "both.parquet"), "--input-format", "parquet", "--output",
                              str(tmp_path / "again"), "--backend", "state", "--no-report"]) == 0
    assert "is not unique" in (err := capsys.readouterr().err) and "(such as dedup_id, the ids" in err, err
    # dedup_id as the id column of input in two folders: kept as it is (ints), not this run's ids
    for folder, ids in (("x", [1, 2]), ("y", [1, 3])):
        (tmp_path / folder).mkdir()
        pq.write_table(pa.table({"dedup_id": ids, "jpg": photos[:2]}), tmp_path / folder / "0.parquet")
    assert dedup_images.main(["--input", str(tmp_path / "x"), "--input", str(tmp_path / "y"), "--input-format",
                              "parquet", "--id-column", "dedup_id", "--output", str(tmp_path / "xy"),
                              "--backend", "state", "--no-report"]) == 0
    assert sorted(r["dedup_id"] for r in read(tmp_path / "xy", "kept") + read(tmp_path / "xy", "duplicates")) == [1, 1, 2, 3]
    assert len(read(tmp_path / "again-2", "kept")) == 4 and read(tmp_path / "again-2", "duplicates") == []


@pytest.mark.parametrize("keep", ["largest", "smallest_id"])
def test_near_duplicates_of_two_crawls_keep_the_smallest_key_however_paths_are_spelt(tmp_path, monkeypatch, keep):
    """Where near-duplicate mode compares ids (equal sizes, or --keep smallest_id), an id outside
    the first folder compares by its key first (KEY (FILE)): of one key the first folder's is
    kept, of two the smaller (a key that is a prefix of the other too), whether the folders are
    given as relative or absolute paths (an absolute FILE#KEY ranked before every key, so the
    first folder lost every tie; KEY@FILE put 10 before 1@FILE)."""
    photos = [p.read_bytes() for p in PHOTOS[:3]]
    _crawl(tmp_path / "a", [["000000005", "000000009", "10"]], [photos])
    _crawl(tmp_path / "b", [["000000005", "000000001", "1"]], [photos])  # "1" is a prefix of "10"
    monkeypatch.chdir(tmp_path)
    for given in (["a", "b"], [str(tmp_path / "a"), str(tmp_path / "b")]):
        out = tmp_path / f"out-{given[0][0]}"
        assert dedup_images.main([*(x for g in given for x in ("--input", g)), "--input-format", "parquet",
                                  "--output", str(out), "--max-distance", "8", "--keep", keep, "--no-report"]) == 0
        dups = {d["jpg"]: d["duplicate_of"] for d in read(out, "duplicates")}
        assert dups == {photos[0]: "000000005", photos[1]: f"000000001 ({tmp_path}/b/00000.parquet)",
                        photos[2]: f"1 ({tmp_path}/b/00000.parquet)"}, (given, dups)


def test_a_label_repeated_within_the_first_file_is_said(tmp_path):
    """A label column repeats within its first file: said as one, whatever other folders hold."""
    for name, labels in (("a", ["cat", "dog", "dog"]), ("b", ["cat"])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"label": labels}), tmp_path / name / "0.parquet")
    paths = [str(tmp_path / "a" / "0.parquet"), str(tmp_path / "b" / "0.parquet")]
    assert inputs.repeated_id(paths, "label") == f"'dog' (rows 1 and 2 of {paths[0]})"
    assert inputs.repeated_id(paths[1:], "label") is None


def test_path_only_parquet_written_by_pyarrow_is_read(tmp_path):
    """pyarrow writes a struct of paths whose bytes are all null with bytes typed null: such a
    file beside one with binary bytes raised in the workers (rc 1), and alone was refused; both
    are read, and the outputs hold the bytes as binary. Many rows of one row group are read; a
    file of no rows beside them is read as none."""
    (tmp_path / "img").mkdir()
    for i, p in enumerate(PHOTOS[:3]):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(p.read_bytes())
    data = tmp_path / "data"
    data.mkdir()
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"id": ["a"], "image": pa.array([{"bytes": PHOTOS[0].read_bytes(), "path": None}], kind)}),
                   data / "a.parquet")
    paths = [str(tmp_path / "img" / f"{i % 3}.jpg") for i in range(70)]  # 70 rows, 3 photos
    pq.write_table(pa.table({"id": [f"b{i}" for i in range(70)], "image": [{"bytes": None, "path": p} for p in paths]}),
                   data / "b.parquet")
    assert pq.read_schema(data / "b.parquet").field("image").type.field("bytes").type == pa.null()
    # a file of no rows (one row group of none) crashed the worker reading it
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "image": pa.array([], kind)}), data / "c.parquet")
    for given, counts in ((data, (71, 3, 68)), (data / "b.parquet", (70, 3, 67))):
        out = tmp_path / f"out-{len(counts)}-{counts[0]}"
        assert dedup_images.main(["--input", str(given), "--input-format", "parquet", "--output", str(out),
                                  "--backend", "state", "--no-report"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"]) == (*counts, 0)
        assert pq.read_schema(next((out / "kept").glob("*.parquet"))).field("image").type == kind
        assert {r["image"]["bytes"] for r in read(out, "kept")} == {p.read_bytes() for p in PHOTOS[:3]}


@pytest.mark.parametrize("column_args, message", [
    (["--image-column", "img"], "--image-column 'img' is not a column"),
    (["--id-column", "uid"], "--id-column 'uid' is not a column"),
    (["--image-column", "caption"], "has type string; expected binary"),
])
def test_unknown_parquet_columns_are_one_line(tmp_path, capsys, column_args, message):
    pq.write_table(pa.Table.from_pylist([{"id": "a", "caption": "x", "image": b"123"}]), tmp_path / "a.parquet")
    argv = ["--input", str(tmp_path / "a.parquet"), "--input-format", "parquet",
            "--output", str(tmp_path / "o"), *column_args]
    assert dedup_images.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err



def test_overlapping_inputs_and_reruns_count_each_file_once(tmp_path):
    """DIR, DIR/*.jpg and a file of DIR by a relative path name the same files; a second run into
    the same output directory replaces the first run's shards instead of adding to them."""
    from pipelines.dedup_images import SAMPLE_DATA

    out = tmp_path / "out"
    relative = os.path.join(os.path.relpath(SAMPLE_DATA), ".", "skagen.jpg")
    linked = tmp_path / "linked"  # two names linked to one file are two inputs (a Hugging Face cache)
    linked.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (linked / name).symlink_to(os.path.join(SAMPLE_DATA, "skagen.jpg"))
    argv = ["--input", SAMPLE_DATA, "--input", f"{SAMPLE_DATA}/*.jpg", "--input", relative,
            "--input", str(linked), "--output", str(out), "--backend", "state"]
    for _ in range(2):
        assert dedup_images.main(argv) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["inputs"], summary["input_files"]) == (18, 18)
        rows = read(out, "kept") + read(out, "duplicates") + read(out, "failed")
        assert len(rows) == 18 and len({r["id"] for r in rows}) == 18
    (out / "kept" / "part-99999-of-99999.parquet").write_bytes(b"stale shard of an older run")
    assert dedup_images.main(argv) == 0
    assert len(read(out, "kept")) == 13
    # A rerun leaves no page or summary of the run before it: none when it writes none.
    assert (out / "report.html").exists()
    assert dedup_images.main(argv + ["--no-report"]) == 0
    assert not (out / "report.html").exists() and (out / "summary.json").exists()
    assert dedup_images.main(argv + ["--max-decode-failures", "0"]) == 1  # 2 of 16 fail to decode
    assert not (out / "summary.json").exists()


def test_overlapping_inputs_read_names_holding_glob_characters(tmp_path, capsys):
    """Overlapping inputs are read by name, each once; a name holding '[', '*' or '?' is a name
    there, not a pattern (`part[1].jpg` as a pattern matches part1.jpg, not itself): on a
    multi-worker runner, where the workers match the names again."""
    src = tmp_path / "in"
    src.mkdir()
    names = ["part[1]", "a*b", "q?", "plain"]
    for name, photo in zip(names, PHOTOS):
        (src / f"{name}.jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    argv = ["--input", str(src), "--input", str(src / "plain.jpg"), "--output", str(out),
            "--backend", "state", "--no-report", *MULTI]
    assert dedup_images.main(argv) == 0, capsys.readouterr()
    rows = read(out, "kept") + read(out, "duplicates") + read(out, "failed")
    assert sorted(basename(r["id"]).removesuffix(".jpg") for r in rows) == sorted(names)


def test_folders_named_with_glob_characters_are_read_as_themselves(tmp_path):
    """`--input 'in[1]'` is the folder in[1], not its sibling in1 (which `in[1]/*` as a pattern
    matches); the same for a --reference folder."""
    photos = {p.name: p for p in PHOTOS}
    for folder, name in (("in[1]", "pool.jpg"), ("in1", "snow.jpg"), ("ref[1]", "pool.jpg"), ("ref1", "snow.jpg")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(photos[name].read_bytes())
    (tmp_path / "in[1]" / "snow.jpg").write_bytes(photos["snow.jpg"].read_bytes())
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(tmp_path / "in[1]"), "--reference", str(tmp_path / "ref[1]"),
                              "--output", str(out), "--backend", "state", "--no-report"]) == 0
    assert [basename(r["id"]) for r in read(out, "kept")] == ["snow.jpg"]
    (dup,) = read(out, "duplicates")
    assert basename(dup["id"]) == "pool.jpg" and dup["duplicate_of"].endswith("ref[1]/pool.jpg")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_patterns"] == [str(tmp_path / "in[1]")]
    assert summary["reference"]["patterns"] == [str(tmp_path / "ref[1]")]


def test_a_first_parquet_file_whose_image_column_is_all_null_takes_the_next_ones_type(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["n0", "n1"], "image": pa.nulls(2)}), src / "part-0.parquet")
    pq.write_table(pa.table({"id": ["p0"], "image": [PHOTOS[0].read_bytes()]}), src / "part-1.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    assert [r["id"] for r in read(out, "kept")] == ["p0"]
    assert sorted(r["id"] for r in read(out, "failed")) == ["n0", "n1"]


@pytest.mark.parametrize("runner", [[], MULTI], ids=["in-process", "multi-process"])
def test_parquet_files_named_with_glob_characters_are_read(tmp_path, runner):
    """Beam's own Parquet reader matches each file's name again as a pattern, so it never read a
    file named `part[1].parquet` (its name matches part1.parquet); the job's reader opens each
    file by the name it was matched as, on every worker."""
    src = tmp_path / "in"
    src.mkdir()
    names = ["part[1]", "a*b", "q?", "plain"]
    for name, photo in zip(names, PHOTOS):
        pq.write_table(pa.table({"id": [name], "image": [photo.read_bytes()]}), src / f"{name}.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--output", str(out),
                              "--backend", "state", "--no-report", *runner]) == 0
    assert sorted(r["id"] for r in read(out, "kept") + read(out, "duplicates") + read(out, "failed")) == sorted(names)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["declared_inputs"], summary["inputs"], summary["adds_up"]) == (4, 4, True)


@pytest.mark.parametrize("mode", [["--backend", "state"], ["--max-distance", "8"],
                                  ["--max-distance", "8", "--hash-column", "h"]],
                         ids=["exact", "near", "near-hash-column"])
def test_an_empty_parquet_input_is_a_run_of_no_records(tmp_path, capsys, mode):
    """Near-duplicate mode refused a 0-row Parquet input, with an error about expected_count."""
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "image": pa.array([], pa.binary()),
                             "h": pa.array([], pa.string())}), src / "00000.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--output", str(out),
                              "--no-report", *mode]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["kept"], summary["duplicates"], summary["failed"], summary["adds_up"]) == \
        (0, 0, 0, 0, True)
    said = capsys.readouterr().out
    assert "0 images: 0 kept, 0 duplicates, 0 failed (adds up)" in said and "None" not in said


def test_a_parquet_file_is_read_as_stored_whatever_its_suffix(tmp_path, capsys):
    """The launcher reads each footer as the workers read the file, as stored: a Parquet file
    named `.gz` is Parquet (a reader decompressing by the name found no footer), and a gzipped
    one is refused before the run, not lost on a worker."""
    import gzip
    plain, packed = tmp_path / "crawl.parquet.gz", tmp_path / "packed.parquet.gz"
    pq.write_table(pa.table({"id": ["p0"], "image": [PHOTOS[0].read_bytes()]}), plain)
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p1"], "image": [PHOTOS[1].read_bytes()]}), buf)
    packed.write_bytes(gzip.compress(buf.getvalue()))
    out = tmp_path / "out"
    argv = ["--input-format", "parquet", "--output", str(out), "--backend", "state", "--no-report"]
    assert dedup_images.main(["--input", str(plain), *argv]) == 0
    assert [r["id"] for r in read(out, "kept")] == ["p0"]
    # A reference of hashes, named the same way: its hash column is sampled as stored too.
    ref = tmp_path / "seen.parquet.gz"
    pq.write_table(pa.table({"id": ["r0"], "image_phash": [beam_phash.hash_image(PHOTOS[0].read_bytes()).hex()]}), ref)
    assert dedup_images.main(["--input", str(plain), "--reference", str(ref), "--reference-format", "parquet",
                              *argv]) == 0
    (dup,) = read(out, "duplicates")
    assert (dup["id"], dup["duplicate_of"]) == ("p0", "r0")
    assert dedup_images.main(["--input", str(packed), *argv]) == 2
    assert f"cannot read the Parquet schema of {str(packed)!r}" in capsys.readouterr().err


@pytest.mark.parametrize("status_type", [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())],
                         ids=["string", "large_string", "dictionary"])
def test_img2dataset_status_is_read_however_the_strings_are_stored(tmp_path, status_type):
    """img2dataset Parquet rewritten by polars (large_string) or pandas (a categorical): a failed
    download still fails with its status, never as an image that is missing."""
    src = tmp_path / "in"
    src.mkdir()
    table = pa.table({"key": ["ok", "gone"], "jpg": [PHOTOS[0].read_bytes(), None],
                      "status": pa.array(["success", "failed_to_download"]).cast(status_type),
                      "error_message": [None, "HTTP 404"]})
    pq.write_table(table, src / "part-0.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--output", str(out),
                              "--backend", "state", "--no-report"]) == 0
    assert [r["key"] for r in read(out, "kept")] == ["ok"]
    (gone,) = read(out, "failed")
    assert gone["key"] == "gone" and gone["error"] == "status failed_to_download: HTTP 404"
    # The same file as a reference: the failed download is a failed reference with its status.
    src2 = tmp_path / "in2"
    src2.mkdir()
    pq.write_table(pa.table({"id": ["copy"], "image": [PHOTOS[0].read_bytes()]}), src2 / "part-0.parquet")
    assert dedup_images.main(["--input", str(src2), "--input-format", "parquet", "--reference", str(src),
                              "--output", str(out), "--backend", "state", "--no-report"]) == 0
    (dup,) = read(out, "duplicates")
    assert (dup["id"], dup["duplicate_of"]) == ("copy", "ok")
    (gone,) = read(out, "reference_failed")
    assert (gone["id"], gone["error"]) == ("gone", "status failed_to_download: HTTP 404")


def test_a_flat_reference_read_from_its_hashes_matches_its_identical_copies_only(tmp_path):
    """The job read only the id and hash columns of a Parquet reference of hashes, so an earlier
    run's flat image (image_quality under 10) matched near copies at distance k, where the API
    given the same table, and every input, match it at distance 0 only."""
    rng = np.random.default_rng(3)
    flat, textured, other = (rng.integers(0, 256, 32, dtype=np.uint8) for _ in range(3))

    def near(h):  # three bits off
        h = h.copy()
        h[0] ^= 0b111
        return h.tobytes().hex()

    ref = tmp_path / "ref"
    ref.mkdir()
    pq.write_table(pa.table({"id": ["flat", "textured", "other"],
                             "image_phash": [h.tobytes().hex() for h in (flat, textured, other)],
                             "image_quality": [1, 80, None]}), ref / "part-00000-of-00001.parquet")
    src = tmp_path / "in"
    src.mkdir()
    inputs = {"flat-copy": flat.tobytes().hex(), "flat-near": near(flat), "textured-near": near(textured),
              "other-near": near(other)}
    pq.write_table(pa.table({"id": list(inputs), "h": list(inputs.values())}), src / "part-0.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--input-format", "parquet", "--hash-column", "h",
                              "--reference", str(ref), "--max-distance", "16", "--output", str(out), "--no-report"]) == 0
    assert [r["id"] for r in read(out, "kept")] == ["flat-near"]
    assert sorted((r["id"], r["duplicate_of"], r["distance"]) for r in read(out, "duplicates")) == [
        ("flat-copy", "flat", 0), ("other-near", "other", 3), ("textured-near", "textured", 3)]


def test_reference_image_column_given_is_read_over_a_hash_column(tmp_path):
    """A Parquet reference holding images and an image_phash column is read from its hashes
    (an earlier run's output); --reference-image-column says to hash the images instead, and
    the detection overrode it (0 matches against another tool's hashes)."""
    photos = [p.read_bytes() for p in PHOTOS[:3]]
    other = beam_phash.hash_images(photos, hash_size=16, algorithm="dhash")  # same width, not ours
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"id": ["r0", "r1", "r2"], "image": photos, "image_phash": [h.hex() for h in other]}), ref)
    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(photos):
        (src / f"{i}.jpg").write_bytes(photo)
    for flag, matched in (([], 0), (["--reference-image-column", "image"], 3)):
        out = tmp_path / f"out{matched}"
        assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--output", str(out),
                                  "--backend", "state", "--no-report", *flag]) == 0
        assert len(read(out, "duplicates")) == matched, flag
        summary = json.loads((out / "summary.json").read_text())["reference"]
        assert summary["hash_column"] == (None if flag else "image_phash")


def test_hashes_an_earlier_run_made_otherwise_are_refused(tmp_path, capsys):
    """kept/ said nothing of how its hashes were made, so an earlier run's dhash 16 kept/ (256
    bits, as phash 16) was taken as a phash reference and matched nothing, without a word. The
    outputs now say it in their schema's metadata (also when hashes came from a column that
    said it), and a run reading them as a reference or a hash column refuses others."""
    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(PHOTOS[:3]):
        (src / f"{i}.jpg").write_bytes(photo.read_bytes())
    runs = {}
    for algorithm in ("dhash", "phash"):
        runs[algorithm] = tmp_path / algorithm
        assert dedup_images.main(["--input", str(src), "--output", str(runs[algorithm]), "--algorithm", algorithm,
                                  "--backend", "state", "--no-report"]) == 0
    capsys.readouterr()
    base = ["--backend", "state", "--no-report"]
    assert dedup_images.main(["--input", str(src), "--reference", str(runs["dhash"] / "kept"),
                              "--output", str(tmp_path / "o1"), *base]) == 2
    err = capsys.readouterr().err
    assert "holds dhash 16 hashes of hash version" in err and "this run makes phash 16" in err, err
    assert "pass --algorithm/--hash-size as they were, or hash the images again" in err, err
    assert not (tmp_path / "o1").exists()
    assert dedup_images.main(["--input", str(runs["dhash"] / "kept"), "--input-format", "parquet",
                              "--hash-column", "image_phash", "--output", str(tmp_path / "o2"), *base]) == 2
    # as they were made: accepted, and the hash-column run's outputs say it again
    assert dedup_images.main(["--input", str(src), "--reference", str(runs["phash"] / "kept"),
                              "--output", str(tmp_path / "o3"), *base]) == 0
    assert len(read(tmp_path / "o3", "duplicates")) == 3
    assert dedup_images.main(["--input", str(runs["dhash"] / "kept"), "--input-format", "parquet", "--algorithm", "dhash",
                              "--hash-column", "image_phash", "--output", str(tmp_path / "o4"), *base]) == 0
    (kept,) = (tmp_path / "o4" / "kept").glob("*.parquet")
    said = json.loads(pq.read_schema(kept).metadata[inputs.HASHED_AS])
    assert said == {"field": "image_phash", "algorithm": "dhash", "hash_size": 16,
                    "hash_version": beam_phash._native.HASH_VERSION}
    # another hash version: refused as well
    (old,) = (runs["phash"] / "kept").glob("*.parquet")
    table = pq.read_table(old)
    stale = json.dumps({**said, "algorithm": "phash", "hash_version": said["hash_version"] - 1}).encode()
    pq.write_table(table.replace_schema_metadata({inputs.HASHED_AS: stale}), old)
    assert dedup_images.main(["--input", str(src), "--reference", str(runs["phash"] / "kept"),
                              "--output", str(tmp_path / "o5"), *base]) == 2
    err = capsys.readouterr().err
    assert f"hash version {said['hash_version'] - 1}" in err and "hash the images again with this version" in err
    # a file that says beside one that does not: the silent one may hold anything
    pq.write_table(table.replace_schema_metadata({}), runs["phash"] / "kept" / "part-00009-of-00010.parquet")
    pq.write_table(table.replace_schema_metadata({inputs.HASHED_AS: json.dumps(said | {"algorithm": "phash"}).encode()}),
                   old)
    assert dedup_images.main(["--input", str(src), "--reference", str(runs["phash"] / "kept"),
                              "--output", str(tmp_path / "o6"), *base]) == 2
    assert "does not say how its hashes were made" in capsys.readouterr().err


def test_an_earlier_run_s_output_folder_is_refused_naming_its_kept(tmp_path, capsys):
    """An earlier run's output folder given as --reference was read as its summary.json and
    report.html, two failed references, and matched nothing (as --input: two failed images).
    Refused now, naming its kept/; given that, the reference matches."""
    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(PHOTOS[:3]):
        (src / f"{i}.jpg").write_bytes(photo.read_bytes())
    base = ["--backend", "state"]
    assert dedup_images.main(["--input", str(src), "--output", str(tmp_path / "run"), *base]) == 0
    # moved under a folder whose name holds a wildcard: its kept/ is found all the same
    earlier = tmp_path / "p[2]" / "earlier"
    earlier.parent.mkdir()
    (tmp_path / "run").rename(earlier)
    capsys.readouterr()
    for flag, given in (("--reference", str(earlier)), ("--reference", f"{earlier}/"), ("--input", str(earlier))):
        argv = ["--output", str(tmp_path / "o1"), flag, given, *base] + (["--input", str(src)] if flag != "--input" else [])
        assert dedup_images.main(argv) == 2, (flag, given)
        err = capsys.readouterr().err
        assert f"{flag} {given!r} is an earlier run's output folder" in err and repr(str(earlier / "kept")) in err, err
    assert not (tmp_path / "o1").exists()
    assert dedup_images.main(["--input", str(src), "--reference", str(earlier / "kept"),
                              "--output", str(tmp_path / "o2"), *base]) == 0
    assert len(read(tmp_path / "o2", "duplicates")) == 3


@pytest.mark.parametrize("fmt", ["auto", "files", "parquet"])
def test_each_reference_folder_is_looked_into_once(tmp_path, monkeypatch, fmt):
    """reference_spec locates the references, and resolve() locates them again: each folder is
    looked into for an earlier run's output once (on an object store, a request each)."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for i, folder in enumerate(folders):
        folder.mkdir()
        if fmt == "parquet":
            pq.write_table(pa.table({"id": [f"r{i}"], "image": [PHOTOS[i].read_bytes()]}), folder / "r.parquet")
        else:
            (folder / f"r{i}.jpg").write_bytes(PHOTOS[i].read_bytes())
    looked = []
    real = input_items._refuse_an_output
    monkeypatch.setattr(input_items, "_refuse_an_output", lambda folder, flag: (looked.append(folder), real(folder, flag))[1])
    spec = inputs.reference_spec([str(f) for f in folders], fmt, "image", "id", None, "image_phash", 256)
    assert spec.fmt == ("files" if fmt == "auto" else fmt)
    assert sorted(looked) == [str(f) for f in folders], looked


def test_a_reference_of_images_and_parquet_together_is_refused(tmp_path, capsys):
    """A folder (or two references) holding images and Parquet was read as image files: the
    Parquet failed as an image, and its hashes matched nothing. Refused unless the format is
    given."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "0.jpg").write_bytes(PHOTOS[0].read_bytes())
    mixed, tables = tmp_path / "mixed", tmp_path / "tables"
    mixed.mkdir()
    tables.mkdir()
    (mixed / "a.jpg").write_bytes(PHOTOS[1].read_bytes())
    for folder in (mixed, tables):
        pq.write_table(pa.table({"id": ["r0"], "image": [PHOTOS[0].read_bytes()]}), folder / "t.parquet")
    base = ["--input", str(src), "--backend", "state", "--no-report"]
    for refs in ([str(mixed)], [str(mixed / "a.jpg"), str(tables)]):
        argv = [*base, "--output", str(tmp_path / "o1")] + [a for r in refs for a in ("--reference", r)]
        assert dedup_images.main(argv) == 2, refs
        err = capsys.readouterr().err
        assert "--reference mixes Parquet files" in err and "give references of one format" in err, err
    # as files, as asked: the Parquet is a failed reference, the image a reference
    assert dedup_images.main([*base, "--output", str(tmp_path / "o2"), "--reference", str(mixed),
                              "--reference-format", "files"]) == 0
    assert [r["id"] for r in read(tmp_path / "o2", "reference_failed")] == [str(mixed / "t.parquet")]


def test_a_reference_hash_column_named_as_the_input_s_id_column_is_read(tmp_path):
    """The job handed the reference's hash column to the transform under its own name, so a
    column named as the input's id column was refused when the pipeline was built, after the
    output had been cleared: exit 1 with a ValueError naming reference_hash_column."""
    photo = PHOTOS[0].read_bytes()
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"name": ["r"], "id": [beam_phash.hash_image(photo).hex()]}), ref)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(photo)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--reference-id-column", "name",
                              "--reference-hash-column", "id", "--output", str(out), "--backend", "state",
                              "--no-report"]) == 0
    assert [(r["id"], r["duplicate_of"]) for r in read(out, "duplicates")] == [(str(src / "a.jpg"), "r")]


def test_a_reference_hash_that_is_not_hex_is_failed_under_its_own_column(tmp_path):
    """A reference hash that did not parse was failed as "reference_hash: not hex ...", the
    job's internal field, not the column given to --reference-hash-column."""
    photo = PHOTOS[0].read_bytes()
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"id": ["bad", "good"], "h": ["zz" * 32, beam_phash.hash_image(photo).hex()]}), ref)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(photo)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--reference-hash-column", "h",
                              "--output", str(out), "--backend", "state", "--no-report"]) == 0
    assert [(r["id"], r["error"].split(":")[0]) for r in read(out, "reference_failed")] == [("bad", "h")]
    assert [(r["id"], r["duplicate_of"]) for r in read(out, "duplicates")] == [(str(src / "a.jpg"), "good")]


def test_reference_image_and_hash_columns_together_are_one_line(tmp_path, capsys):
    ref = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"id": ["r"], "image": [PHOTOS[0].read_bytes()], "image_phash": ["00" * 32]}), ref)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(PHOTOS[0].read_bytes())
    assert dedup_images.main(["--input", str(src), "--reference", str(ref), "--reference-image-column", "image",
                              "--reference-hash-column", "image_phash", "--output", str(tmp_path / "out"),
                              "--backend", "state", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--reference-image-column or --reference-hash-column, not both" in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_reference_status_reasons_are_those_of_input_records():
    """References' failed downloads are worded from whole columns; each row reads as an input
    record's failure reads (split_status), over chunks, dictionary statuses and every message."""
    statuses = ["success", "failed_to_download", None, "failed_to_resize", "success", "x"]
    messages = ["", "HTTP 404", "lost", None, None, ""]
    table = pa.concat_tables([
        pa.table({"id": [str(i) for i in range(a, b)],
                  "status": pa.array(statuses[a:b]).dictionary_encode(),
                  "error_message": pa.array(messages[a:b], pa.string())}) for a, b in ((0, 2), (2, 6))])
    reasons = inputs.with_status_reasons(table, "status")
    assert reasons.column_names == ["id", "error"]
    expected = []
    for status, message in zip(statuses, messages):
        (out,) = inputs.split_status({"status": status, "error_message": message}, "status")
        expected.append(out.value["error"] if isinstance(out, TaggedOutput) else None)
    assert reasons.column("error").to_pylist() == expected
    assert expected[1] == "status failed_to_download: HTTP 404" and expected[5] == "status x: no error message"


def _lose_last_span(monkeypatch, name: str):
    """A faulty reader: the files whose path holds ``name`` lose their last span of row groups."""
    every = parquet_read.row_groups
    monkeypatch.setattr(parquet_read, "row_groups", lambda path: list(every(path))[:-1] if name in path else every(path))


def test_a_record_the_readers_never_produced_does_not_add_up(tmp_path, capsys, monkeypatch):
    """A reader that loses rows (here: one that skips a file's last span of row groups) must not
    make a complete-looking run: the footers said how many rows there were."""
    src = tmp_path / "in"
    src.mkdir()
    for name, photo in zip(["one", "two"], PHOTOS):
        pq.write_table(pa.table({"id": [name], "image": [photo.read_bytes()]}), src / f"{name}.parquet")
    _lose_last_span(monkeypatch, "two")
    out = tmp_path / "out"
    argv = ["--input", str(src), "--input-format", "parquet", "--output", str(out), "--backend", "state",
            "--no-report"]
    assert dedup_images.main(argv) == 1
    assert "the inputs held 2 records at the start (2 Parquet files), 1 were read" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["declared_inputs"], summary["inputs"], summary["adds_up"]) == (2, 1, False)


@pytest.mark.parametrize("mode", [["--backend", "state"], ["--max-distance", "16"]], ids=["exact", "near"])
def test_a_reference_the_readers_never_produced_does_not_add_up(tmp_path, capsys, monkeypatch, mode):
    """A reference never read would let its copies through as kept: the run compares the
    references read (hashed or failed) with the rows the footers declared."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for name, photo in zip(["one", "two"], PHOTOS):
        pq.write_table(pa.table({"id": [name, name + "-broken"], "image": [photo.read_bytes(), b"not an image"]}),
                       ref / f"{name}.parquet")
    out = tmp_path / "out"
    argv = ["--input", str(PHOTOS[0]), "--reference", str(ref), "--output", str(out), "--no-report", *mode]
    assert dedup_images.main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["reference"]["declared"] == 4
    _lose_last_span(monkeypatch, "two")
    assert dedup_images.main(argv) == 1
    assert "the references held 4 records at the start (2 Parquet files), 2 were read" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["reference"]["declared"], summary["adds_up"]) == (4, False)


def test_auto_drops_what_the_exact_run_said_it_would(tmp_path, capfd):
    """make run's point: exact mode names the copies a perceptual threshold would catch, and
    --max-distance auto on the same photos drops exactly that many more."""
    assert dedup_images.main(["--output", str(tmp_path / "exact"), "--backend", "state"]) == 0
    assert HINT in capfd.readouterr().out
    out = tmp_path / "auto"
    assert dedup_images.main(["--output", str(out), "--max-distance", "auto"]) == 0
    printed = capfd.readouterr().out
    assert AUTO_LINE in printed and "kept images lie within" not in printed  # nothing left within auto
    pairs = {tuple(sorted((basename(r["id"]), basename(r["duplicate_of"])))): r["distance"]
             for r in read(out, "duplicates")}
    assert set(pairs) == SAMPLE_GROUPS | SAMPLE_NEAR
    assert all(pairs[p] == 0 for p in SAMPLE_GROUPS) and all(1 <= pairs[p] <= 9 for p in SAMPLE_NEAR)
    page = (out / "report.html").read_text()
    assert "Largest near-duplicate groups (7 shown)" in page and "distance 9<br>" in page


@pytest.mark.parametrize("glob, ids", [("i*/*.jpg", ["./in/a.jpg", "./in/b.jpg"]), ("in*/a.jpg", ["./in/a.jpg"]),
                                       ("in/?.jpg", ["in/a.jpg", "in/b.jpg"]), ("*.jpg", ["./top.jpg"])])
def test_a_relative_glob_with_a_wildcard_in_its_first_part_matches(tmp_path, monkeypatch, glob, ids):
    """Beam's local match lists the folder named before the first wildcard: for `i*/*.jpg`, none,
    so it matched no files, where the shell and the same glob made absolute find them."""
    (tmp_path / "in").mkdir()
    for name in ("in/a.jpg", "in/b.jpg", "top.jpg"):
        (tmp_path / name).write_bytes(PHOTOS[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    assert inputs.resolve([glob], "files", in_process=True).paths == ids


@pytest.mark.parametrize("fmt", ["files", "webdataset"])
def test_a_glob_with_a_doubled_slash_matches_as_with_one(tmp_path, fmt):
    """`in//*.jpg` names the files `in/*.jpg` does (the shell and Python's glob agree); Beam's
    match compared it with the listing's `in/x.jpg` and found nothing."""
    src = tmp_path / "in"
    src.mkdir()
    if fmt == "files":
        (src / "a.jpg").write_bytes(PHOTOS[0].read_bytes())
    else:
        with tarfile.open(src / "00000.tar", "w") as tar:
            info = tarfile.TarInfo("k.jpg")
            info.size = len(PHOTOS[0].read_bytes())
            tar.addfile(info, io.BytesIO(PHOTOS[0].read_bytes()))
    suffix = "*.jpg" if fmt == "files" else "*.tar"
    assert inputs.resolve([f"{src}//{suffix}"], fmt).matched == 1


def test_an_input_that_cannot_be_listed_says_why(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "o")
    # A scheme whose filesystem extra is missing here: named as such, not "matched no files".
    assert dedup_images.main(["--input", "gs://some-bucket/images/*.jpg", "--output", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be listed: no Beam filesystem" in err and "pip install '.[gcp]'" in err, err
    assert "matched no files" not in err and "\n" not in err

    from apache_beam.io.filesystems import FileSystems

    def denied(patterns):
        raise PermissionError("403 Forbidden: the credentials cannot list this bucket")
    monkeypatch.setattr(FileSystems, "match", staticmethod(denied))
    # (a local glob is listed by the job itself; a remote one is Beam's match)
    assert dedup_images.main(["--input", "s3://some-bucket/images/*/*.jpg", "--output", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be listed: PermissionError: 403 Forbidden" in err and "matched no files" not in err, err

    def walk(top, onerror=None, followlinks=False):  # a folder the walk cannot list (root needs none)
        onerror(PermissionError(13, "Permission denied", f"{top}/private"))
        yield from ()
    monkeypatch.setattr(input_items.os, "walk", walk)
    assert dedup_images.main(["--input", f"{DATA}*/*.jpg", "--output", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be listed: PermissionError: [Errno 13] Permission denied" in err and "\n" not in err, err


def test_a_run_without_metrics_is_checked_against_the_outputs_or_unverified(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dedup_images, "counts_of", lambda result: {})  # a runner with no metrics
    out = tmp_path / "o"
    assert dedup_images.main(["--output", str(out), "--backend", "state", "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts_from"] == "outputs" and summary["verified"] and summary["adds_up"]
    assert summary["inputs"] == 16 and summary["kept"] + summary["duplicates"] + summary["failed"] == 16

    # WebDataset input: the number of samples is not known up front, so nothing can be checked.
    import tarfile
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for p in sorted(DATA.glob("*.jpg"))[:3]:
            tar.add(p, arcname=f"{p.stem}.jpg")
    capsys.readouterr()
    assert dedup_images.main(["--input", str(shards), "--input-format", "webdataset",
                              "--output", str(tmp_path / "o2"), "--backend", "state", "--no-report"]) == 3
    assert "UNVERIFIED" in capsys.readouterr().out
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["inputs"] is None and not summary["verified"] and not summary["adds_up"]


def test_library_names_in_errors_become_flags_but_quoted_values_stay():
    message = "state_dir must be a path every worker sees, got 'gs://b/backend/hash_size'"
    assert arguments.as_flags(message) == "--state must be a path every worker sees, got 'gs://b/backend/hash_size'"


@pytest.mark.parametrize("stop", ["Ctrl-C", "failure"])
def test_a_run_cut_short_leaves_only_its_log(tmp_path, monkeypatch, stop):
    """A run interrupted (or failed) after its writers had finished parts: an interrupted run left
    them in kept/, duplicates/ and failed/, with no summary, looking like a partial result (and a
    failed one left its empty output folders). Now only the log stays, as the README says, and no
    shard in --write-shards."""
    import apache_beam as beam

    real_run = beam.Pipeline.run

    def run_then_stop(self, *args, **kwargs):
        real_run(self, *args, **kwargs).wait_until_finish()  # every output written
        raise KeyboardInterrupt if stop == "Ctrl-C" else RuntimeError("a failure after the writes")

    shards, src = tmp_path / "shards", shard_of_three(tmp_path / "in")
    monkeypatch.setattr(beam.Pipeline, "run", run_then_stop)
    argv = ["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
            "--backend", "state", "--write-shards", str(shards)]
    if stop == "Ctrl-C":
        with pytest.raises(KeyboardInterrupt):
            dedup_images.main(argv)
    else:
        assert dedup_images.main(argv) == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["logs"]
    assert not [p for p in shards.rglob("*") if p.is_file()]


def test_a_stopped_run_whose_commit_cannot_be_told_keeps_its_finished_outputs(tmp_path, monkeypatch, capsys):
    """When whether the run committed cannot be read (a state directory gone unreadable), its
    outputs may be the ones the state holds: the finished ones stay (unfinished parts go), and
    the job says it could not tell."""
    import apache_beam as beam

    real_run = beam.Pipeline.run

    shards, src = tmp_path / "shards", shard_of_three(tmp_path / "in")
    # a writer's part in each folder, as a write cut short leaves it
    unfinished = [tmp_path / "o" / ".tmp-0123456789ab", shards / ".tmp-0123456789ab"]

    def run_then_fail(self, *args, **kwargs):
        real_run(self, *args, **kwargs).wait_until_finish()
        for part in unfinished:
            part.mkdir()
        raise RuntimeError("a failure after the writes")

    def unreadable(self):
        raise OSError("the state directory cannot be read")

    monkeypatch.setattr(beam.Pipeline, "run", run_then_fail)
    monkeypatch.setattr(beam_phash.ImagePhashDedup, "committed", unreadable)
    assert dedup_images.main(["--input", str(src), "--input-format", "webdataset", "--output", str(tmp_path / "o"),
                              "--backend", "state", "--no-report", "--write-shards", str(shards)]) == 1
    assert "could not tell whether the run had committed its state" in capsys.readouterr().err
    assert read(tmp_path / "o", "kept") and list(shards.glob("*.tar"))
    assert not [part for part in unfinished if part.exists()]


def test_ctrl_c_in_a_callers_process_is_the_callers(monkeypatch, tmp_path):
    """main(argv) called in-process leaves a KeyboardInterrupt (and the caller's Ray) to the caller."""
    def interrupt(argv, con, command_line=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(dedup_images, "_run", interrupt)
    with pytest.raises(KeyboardInterrupt):
        dedup_images.main(["--output", str(tmp_path / "o")])


@pytest.mark.parametrize("pressed, code, line", [
    ("during the run", 130, "beam-phash: interrupted"),
    ("after the run", 3, "beam-phash: Ctrl-C while the embedded Ray stopped; the run had ended"),
])
def test_ctrl_c_after_the_run_keeps_its_exit_code(tmp_path, pressed, code, line):
    """On the command line, a Ctrl-C while the embedded Ray stops after the run has ended (its
    results printed, its outputs written) cut nothing short: the run's own exit code, not 130."""
    import subprocess
    import sys

    script = f"""
import sys
from pipelines import dedup_images, inputs, parquet_read
def run(argv, con, command_line=False):
    if {pressed!r} == "during the run":
        raise KeyboardInterrupt
    con.say("results")
    return 3
def stop():
    raise KeyboardInterrupt
dedup_images._run, dedup_images.stop_embedded_ray = run, stop
sys.argv = ["beam-phash", "--output", {str(tmp_path / "o")!r}]
sys.exit(dedup_images.main())
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(line) and "Traceback" not in proc.stderr, proc.stderr


def test_the_failure_threshold_stops_the_job_in_one_line(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.jpg").write_bytes(sorted(DATA.glob("*.jpg"))[0].read_bytes())
    for i in range(3):
        (inputs / f"bad{i}.jpg").write_bytes(b"not a jpeg %d" % i)
    argv = ["--input", str(inputs), "--output", str(tmp_path / "o"), "--backend", "state"]
    (tmp_path / "o" / ".tmp-notes").mkdir(parents=True)  # a user's, not the writers' (.tmp-<12 hex>)
    assert dedup_images.main(argv + ["--max-decode-failures", "0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("beam-phash: error: 3 of 4 inputs (75.0%) could not be hashed"), err
    assert "no outputs were written: rerun without the threshold" in err and "[while running" not in err
    unfinished = [p for p in (tmp_path / "o").rglob("*") if p.name.startswith(("beam-temp", ".tmp-"))]
    assert unfinished == [tmp_path / "o" / ".tmp-notes"]  # the writers' parts and the report's writes are gone
    # only the log, and the user's own folder: not the empty report/ (and kept/...) the run made
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".tmp-notes", "logs"]
    assert dedup_images.main(argv) == 0  # no limit by default: failures are data


def test_a_file_that_cannot_be_read_is_a_failed_record(tmp_path, monkeypatch):
    """A listed file that cannot be read (gone since it was listed, no permission) is failed
    with the reason, and the counts still add up."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.jpg", "gone.jpg"):
        (src / name).write_bytes((DATA / "pool.jpg").read_bytes())
    real_open = LocalFileSystem.open

    def open_or_fail(self, path, *args, **kwargs):
        if path.endswith("gone.jpg"):
            raise FileNotFoundError(f"[Errno 2] No such file or directory: {path!r}")
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "open", open_or_fail)
    out = tmp_path / "out"
    assert dedup_images.main(["--input", str(src), "--output", str(out), "--backend", "state", "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["kept"], summary["failed"]) == (2, 1, 1)
    [failed] = read(out, "failed")
    assert basename(failed["id"]) == "gone.jpg"
    assert failed["error"].startswith("cannot read the file: FileNotFoundError"), failed


@pytest.mark.parametrize("fmt, spread_step, match_step", [("files", "Files/Spread", "Files/Match"),
                                                          ("webdataset", "Shards/Spread", "Shards/Match")])
@pytest.mark.parametrize("extra, spread", [([], False), (MULTI, True), (["--runner", "DirectRunner"], True)],
                         ids=["in-process", "multi-process", "named-runner"])
def test_inputs_are_spread_over_workers_unless_there_is_one(tmp_path, extra, spread, fmt, spread_step, match_step,
                                                            monkeypatch):
    """Matched files and shards are reshuffled before they are read, so that several workers
    share the reading and hashing, except on the one in-process worker of the default runner,
    which reads the launcher's listing instead of listing the input again (and takes the keys
    repeated across shards from the launcher, however many shards: no pre-pass)."""
    import tarfile

    import apache_beam as beam

    from pipelines import webdataset_read

    source = []
    if fmt == "webdataset":
        monkeypatch.setattr(webdataset_read, "LOCAL_KEY_CHECK_SHARDS", 0)  # "many" shards
        for i in range(2):
            with tarfile.open(tmp_path / f"0000{i}.tar", "w") as tar:
                tar.add(DATA / "pool.jpg", arcname=f"k{i}.jpg")
        source = ["--input", str(tmp_path), "--input-format", fmt]
    _, spec, dedup, options, _ = dedup_images.configure(
        ["--output", str(tmp_path / "out"), "--backend", "state", *source, *extra])
    p = beam.Pipeline(options=options)
    dedup_images.build(p, spec, str(tmp_path / "out"), dedup, report=False)
    names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert any(n.endswith("/" + spread_step) for n in names) == spread
    assert any(n.endswith("/" + match_step) for n in names) == spread
    assert any(n.endswith("/Listed") for n in names) != spread
    if fmt == "webdataset":
        assert any("/RepeatedKeys/" in n for n in names) == spread


def test_parquet_files_whose_column_types_differ(tmp_path, capsys):
    """The outputs hold every file's values: ints in one file and floats in another are written
    as floats (not truncated to ints), a column all null in the first file takes the next file's
    type; types no value converts between are a one-line error before anything runs."""
    photos = [(DATA / name).read_bytes() for name in ("pool.jpg", "snow.jpg")]
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [photos[0]], "score": [1],
                             "note": pa.array([None], pa.null())}), src / "a.parquet")
    pq.write_table(pa.table({"id": ["b"], "image": [photos[1]], "score": [0.5], "note": ["hello"]}),
                   src / "b.parquet")
    out = tmp_path / "out"
    assert dedup_images.main(["--input-format", "parquet", "--input", str(src), "--output", str(out),
                              "--no-report", "--backend", "state"]) == 0
    assert sorted((r["id"], r["score"], r["note"]) for r in read(out, "kept")) == [("a", 1.0, None), ("b", 0.5, "hello")]
    pq.write_table(pa.table({"id": ["c"], "image": [photos[1]], "score": ["high"], "note": ["x"]}), src / "c.parquet")
    assert dedup_images.main(["--input-format", "parquet", "--input", str(src), "--output", str(out),
                              "--no-report", "--backend", "state"]) == 2
    assert "types that do not convert" in capsys.readouterr().err


def test_output_directories_are_named_without_trailing_slashes(tmp_path, capfd):
    args, _ = arguments.parse_args(["--output", "runs/v1//", "--write-shards", "shards/"])
    assert (args.output, args.write_shards) == ("runs/v1", "shards")
    assert arguments.parse_args(["--output", "/"])[0].output == "/"
    assert arguments.parse_args(["--output", "gs://bucket/dedup/"])[0].output == "gs://bucket/dedup"
    out = tmp_path / "out"
    assert dedup_images.main(["--output", f"{out}/", "--backend", "state", "--no-report"]) == 0
    printed = capfd.readouterr().out
    assert f"output: {out}/{{kept,duplicates,failed}}/*.parquet, {out}/summary.json" in printed
    assert "//" not in printed
