"""The job-only source package of ``pipelines/`` (``beam-phash-pipelines``).

This is *not* how beam-phash itself is built: ``pip install .`` uses pyproject.toml (maturin),
and the wheel it builds carries ``pipelines/`` too, so remote Beam workers (Dataflow, Flink,
Spark), which cannot compile Rust, need only that wheel::

    python -m pipelines.dedup_images --runner DataflowRunner \\
        --extra_package dist/beam_phash-0.1.0-cp311-abi3-manylinux_2_34_x86_64.whl ...

Do not pass this file as ``--setup_file``: Beam's stager builds the file's directory with
``python -m build --sdist`` when the ``build`` module is installed, and here that reads
pyproject.toml and stages the Rust sdist, which workers would have to compile.

``python setup.py sdist`` builds a source package of the job code alone (for an image or a
worker that already has the beam-phash wheel and takes newer job code): it depends on the wheel
(``beam-phash==VERSION``) and holds no Rust. It is built in a staging directory that holds only
``pipelines/`` and a generated ``setup.py`` (what pip runs to install it): run beside
pyproject.toml, setuptools would read maturin's ``[project]`` table (renaming this package
``beam-phash``) and ship pyproject.toml, which would make workers try to compile the Rust core.
"""
import os
import shutil
import sys
import tempfile

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "beam-phash-pipelines"
VERSION = "0.1.0"


def absolute_dist_dir(argv):
    """Make --dist-dir/-d absolute (it is resolved after we chdir), defaulting to ./dist."""
    argv = list(argv)
    for flag in ("--dist-dir", "-d"):
        if flag in argv:
            i = argv.index(flag) + 1
            argv[i] = os.path.abspath(argv[i])
            return argv
        for i, arg in enumerate(argv):
            if arg.startswith(flag + "="):
                argv[i] = flag + "=" + os.path.abspath(arg.split("=", 1)[1])
                return argv
    if "sdist" in argv or "bdist_wheel" in argv:
        argv += ["--dist-dir", os.path.join(HERE, "dist")]
    return argv


#: The job package's metadata, also written into the staged setup.py that installs it.
METADATA = dict(
    name=NAME,
    version=VERSION,
    description="Runnable Beam jobs of beam-phash (job code only; needs the beam-phash wheel)",
    packages=["pipelines"],
    package_data={"pipelines": ["sample_data/*", "*.md"]},
    install_requires=["beam-phash==" + VERSION],
    python_requires=">=3.11",
)


def main():
    args = absolute_dist_dir(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="beam-phash-job-") as stage:
        shutil.copytree(os.path.join(HERE, "pipelines"), os.path.join(stage, "pipelines"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(os.path.join(stage, "setup.py"), "w") as f:
            f.write(f"import setuptools\n\nsetuptools.setup(**{METADATA!r})\n")
        with open(os.path.join(stage, "MANIFEST.in"), "w") as f:
            f.write("recursive-include pipelines/sample_data *\ninclude pipelines/*.md\n")
        os.chdir(stage)
        setuptools.setup(**METADATA, script_args=args)


if __name__ == "__main__":
    main()
