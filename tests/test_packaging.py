"""Packaging: the typed package ships its stubs, and setup.py builds the job-only sdist that
Beam's --setup_file stages for remote workers."""
import pathlib
import subprocess
import sys
import tarfile

import beam_phash

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_stubs_and_marker_ship_with_the_package():
    pkg = pathlib.Path(beam_phash.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "_native.pyi").read_text()
    for name in ("def hash_image", "def hash_images", "class PHash", "class ImageDecodeError"):
        assert name in stub


def test_setup_file_builds_the_job_only_sdist(tmp_path):
    # Exactly what Beam's stager runs for --setup_file (from the file's directory).
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
