"""Packaging: the typed package ships its stubs, the release wheel installs and runs the job
without Rust, and setup.py builds an installable job-only sdist."""
import os
import pathlib
import subprocess
import sys
import tarfile

import beam_phash

from conftest import ROOT


def test_stubs_and_marker_ship_with_the_package():
    pkg = pathlib.Path(beam_phash.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "_native.pyi").read_text()
    for name in ("def hash_image", "def hash_images", "class PHash", "class ImageDecodeError"):
        assert name in stub


def test_setup_py_builds_an_installable_job_only_sdist(tmp_path):
    subprocess.run([sys.executable, "setup.py", "sdist", "--dist-dir", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (sdist,) = tmp_path.glob("*.tar.gz")
    # setuptools >= 69 normalises the file name to underscores (PEP 625).
    assert sdist.name.replace("_", "-") == "beam-phash-pipelines-0.1.0.tar.gz"
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        requires = tar.extractfile(next(n for n in names if n.endswith("requires.txt"))).read().decode()
    assert any(n.endswith("pipelines/__init__.py") for n in names)
    # Nothing that would make a worker compile Rust or shadow the wheel.
    assert not any(n.endswith(("pyproject.toml", "Cargo.toml")) or "/rust_ext/" in n for n in names)
    assert not any("/beam_phash/" in n for n in names)
    assert requires.strip() == "beam-phash==0.1.0"
    # pip installs it (it holds the setup.py pip runs), with the job code and its sample photos.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(sdist)], check=True, capture_output=True, timeout=300)
    assert (target / "pipelines" / "cli.py").exists() and (target / "pipelines" / "sample_data" / "pool.jpg").exists()
    assert not (target / "beam_phash").exists()


def test_release_wheel_installs_and_hashes_without_a_rust_toolchain(tmp_path):
    """What remote workers get (--extra_package or a container image): the abi3 manylinux wheel
    from `maturin build --release`, installed where there is no cargo or rustc at all."""
    dist = tmp_path / "dist"
    # `-i` names the interpreter `make build` (pip's editable build) names, so pyo3's build
    # configuration is the same and cargo reuses that release build instead of compiling
    # the crate again; the wheel is abi3 all the same (checked below).
    subprocess.run([str(pathlib.Path(sys.executable).parent / "maturin"), "build", "--release",
                    "-i", sys.executable, "--out", str(dist)],
                   cwd=ROOT, check=True, capture_output=True, timeout=1200)
    (wheel,) = dist.glob("*.whl")
    assert "-cp311-abi3-" in wheel.name and "manylinux" in wheel.name, wheel.name
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    # Only system directories on PATH, and Cargo/rustup homes that hold nothing.
    bare = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
            "CARGO_HOME": str(tmp_path / "no-cargo"), "RUSTUP_HOME": str(tmp_path / "no-rustup"),
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "pip"))}
    assert subprocess.run(["sh", "-c", "command -v cargo rustc"], env=bare).returncode != 0
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   env=bare, check=True, capture_output=True, timeout=900)
    code = ("import beam_phash, pathlib, sys; "
            "print(beam_phash.__file__); "
            "print(beam_phash.hash_image(pathlib.Path(sys.argv[1]).read_bytes()).hex())")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code, str(ROOT / "tests" / "data" / "pool.jpg")],
                         env=bare, cwd=tmp_path, check=True, capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(venv)), "imported the source tree, not the wheel"
    assert out[1] == "052cffc505528244dd84ca4e310ddba508ce99a835e466c24728e915416b1595"
    # The wheel's command runs, and ends with its run's exit code.
    job = subprocess.run([str(venv / "bin" / "beam-phash"), "--input", str(ROOT / "tests" / "data"),
                          "--output", str(tmp_path / "out"), "--backend", "state", "--no-report"],
                         env=bare, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0 and "(adds up)" in job.stdout, (job.stdout, job.stderr)


def test_actors_and_the_early_start_do_not_import_beam():
    """Ray actor processes and the job's early start must not pay for importing Beam (about a
    second of CPU each on 2 cores)."""
    code = ("import sys, beam_phash, beam_phash.exact.ray_actor, beam_phash.exact.ray_cluster, "
            "beam_phash.exact.store, pipelines.early_start, pipelines.console; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
