"""What the job's two file writers (``parquet_write``, ``webdataset_write``) share: parts are
written per bundle into a temporary directory and reported from ``finish_bundle``; one finalize
step renames them and deletes the directory, with whatever failed attempts left in it."""
from __future__ import annotations

import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


#: The names :func:`tmp_dir` gives, as a glob (a failed run's leftovers are found by it).
TMP_DIR_GLOB = ".tmp-" + "[0-9a-f]" * 12


def tmp_dir(out_dir: str) -> str:
    """A temporary directory of its own for one write into ``out_dir``: ``out_dir/.tmp-<run>``."""
    return FileSystems.join(out_dir, f".tmp-{uuid.uuid4().hex[:12]}")


def global_output(value) -> WindowedValue:
    """An output of ``finish_bundle``: it has no input element to take a window from."""
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


def remove_tree(directory: str) -> None:
    """Delete a temporary directory and whatever failed attempts left in it."""
    leftovers = [m.path for m in FileSystems.match([FileSystems.join(directory, "*")])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def ensure_dir(directory: str) -> None:
    """Create ``directory`` unless it exists; workers writing parts at the same time race to
    create it, and losing that race is fine."""
    if FileSystems.exists(directory):
        return
    try:
        FileSystems.mkdirs(directory)
    except IOError:
        if not FileSystems.exists(directory):
            raise
