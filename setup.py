"""Beam ``--setup_file`` entry point for the jobs in ``pipelines/``.

This is *not* how beam-phash itself is built: ``pip install .`` uses pyproject.toml (maturin).
Remote Beam workers (Dataflow, Flink, Spark) cannot compile Rust, so they install the prebuilt
beam-phash wheel passed with ``--extra_package dist/beam_phash-*.whl`` and then this small
source package, which carries only the pure-Python job code and depends on that wheel::

    python -m pipelines.dedup_images --runner DataflowRunner \\
        --extra_package dist/beam_phash-0.1.0-cp311-abi3-manylinux_2_34_x86_64.whl \\
        --setup_file ./setup.py ...

Beam's launcher runs ``python setup.py sdist --dist-dir DIR`` on this file and stages the result.

The package is built in a staging directory that holds only ``pipelines/``: run beside
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


def main():
    args = absolute_dist_dir(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="beam-phash-job-") as stage:
        shutil.copytree(os.path.join(HERE, "pipelines"), os.path.join(stage, "pipelines"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        os.chdir(stage)
        setuptools.setup(
            name=NAME,
            version=VERSION,
            description="Runnable Beam jobs of beam-phash (job code only; needs the beam-phash wheel)",
            packages=["pipelines"],
            install_requires=["beam-phash==" + VERSION],
            python_requires=">=3.11",
            script_args=args,
        )


if __name__ == "__main__":
    main()
