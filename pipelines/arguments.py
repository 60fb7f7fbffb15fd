"""The command line of ``pipelines.dedup_images``: its flags, their parsing, and the checks that
refuse a flag the run would not read (a typo of a Beam option, an option of the other mode) in
one line, as every configuration error of the job is."""
from __future__ import annotations

import argparse
import re
from typing import List, Optional, Set

from apache_beam.options.pipeline_options import PipelineOptions

import beam_phash
from beam_phash.failures import DEFAULT_MAX_INTERNAL
from beam_phash.near.policy import KEEP_POLICIES
from pipelines import inputs as job_inputs
from pipelines.errors import ConfigError
from pipelines.webdataset_read import DEFAULT_IMAGE_EXTS
from pipelines.webdataset_write import DEFAULT_SHARD_MB

DESCRIPTION = "Deduplicate images with ImagePhashDedup, from image files, Parquet or WebDataset shards, on any Beam runner."


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit code 2, like every other
    configuration error of this job."""

    def error(self, message):
        raise ConfigError(message)


def _distance(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bits or 'auto', got {value!r}") from None


def _fraction(value: str) -> float:
    """A failure threshold: a fraction of the inputs, 0 to 1."""
    try:
        fraction = float(value)
    except ValueError:
        fraction = None
    if fraction is None or not 0 <= fraction <= 1:  # (NaN is not in range either)
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}")
    return fraction


def parse_args(argv: Optional[List[str]]):
    """(the job's arguments, the flags left for Beam)."""
    args, beam_args = parser().parse_known_args(argv)
    args.output = _directory(args.output)
    if args.write_shards is not None:
        args.write_shards = _directory(args.write_shards)
    return args, beam_args


def _directory(name: str) -> str:
    """An output directory named without its trailing slashes, as the job prints and joins it
    ("out/" and "out" are one directory; "/" and "gs://" stay as given)."""
    stripped = name.rstrip("/")
    return stripped if stripped and not stripped.endswith(":") else name


def parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(prog="beam-phash", description=DESCRIPTION)
    ap.add_argument("--input", action="append", default=None,
                    help="directory, glob or file; repeat for several (default: the bundled sample); "
                         "names starting with a dot (.DS_Store, macOS's ._NAME) are passed over unless the "
                         "pattern spells the dot ('DIR/.*')")
    ap.add_argument("--input-format", default="files", choices=job_inputs.FORMATS,
                    help="files: each file is one image; parquet: rows with an image column; "
                         "webdataset: tar shards, plain or compressed (a directory means its .tar, .tar.gz, .tgz, "
                         ".tar.bz2 and .tar.xz shards), one record per sample")
    ap.add_argument("--image-column", default="image",
                    help="Parquet: column with the image bytes, or a struct with a 'bytes' field "
                         "(default image, else img2dataset's jpg/png/webp)")
    ap.add_argument("--id-column", default="id",
                    help="Parquet: column with a unique record id (default id, else img2dataset's key)")
    ap.add_argument("--image-ext", default=None, metavar="EXTS",
                    help="WebDataset: the image member is the first of these suffixes a sample has "
                         f"(default {','.join(DEFAULT_IMAGE_EXTS)})")
    ap.add_argument("--no-shard-metadata", action="store_true",
                    help="WebDataset: do not read the sidecar Parquet (00000.parquet beside 00000.tar): no "
                         "columns joined, and its failed downloads are not counted")
    ap.add_argument("--write-shards", default=None, metavar="DIR",
                    help="WebDataset: write the kept samples, byte-identical, as new shards "
                         "DIR/00000.tar ... and their keys and input shards as DIR/kept_keys/*.parquet")
    ap.add_argument("--shard-size", type=float, default=None, metavar="MB",
                    help=f"--write-shards: target shard size in MiB (default {DEFAULT_SHARD_MB:g})")
    ap.add_argument("--output", default="out/dedup", help="output directory (default: out/dedup)")
    ap.add_argument("--hash-size", type=int, default=16)
    ap.add_argument("--algorithm", default="phash", choices=beam_phash.ALGORITHMS)
    ap.add_argument("--backend", default=None, choices=["ray", "state"],
                    help="exact dedup: ray (bucket actors, the default) or state (Beam state)")
    ap.add_argument("--num-buckets", type=int, default=None,
                    help="Ray: buckets the hashes are routed to (default 16; a --state keeps one "
                         "directory each)")
    ap.add_argument("--num-actors", type=int, default=None,
                    help="Ray: actor processes hosting the buckets (default: one per CPU of the cluster, "
                         "at most --num-buckets)")
    ap.add_argument("--ray-address", default=None,
                    help="existing Ray cluster (host:port or auto); default: an embedded local Ray")
    ap.add_argument("--backend-name", default=None,
                    help="Ray: a named backend that outlives the job, so later jobs dedup against it")
    ap.add_argument("--state", default=None, metavar="DIR",
                    help="dedup against everything earlier jobs with the same DIR kept, then add "
                         "what this job keeps (exact mode with Ray: the bucket seen-set, which also "
                         "survives actors dying; near-duplicate mode: Parquet segments of kept hashes)")
    ap.add_argument("--reference", action="append", default=None, metavar="PATH",
                    help="drop every input within --max-distance of these images (exact mode: the "
                         "same hash): image files (a folder or glob), Parquet with an image or hash "
                         "column, such as an earlier run's kept/, or WebDataset shards; repeat for "
                         "several. References are never output")
    ap.add_argument("--reference-format", default="auto", choices=("auto",) + job_inputs.FORMATS,
                    help="auto (default): Parquet when every matched file ends in .parquet, WebDataset "
                         "when they are shards, plain or compressed (with their .parquet sidecars), "
                         "else image files")
    ap.add_argument("--reference-image-column", default=None, metavar="COL",
                    help="Parquet references: the image column (default: --image-column)")
    ap.add_argument("--reference-id-column", default=None, metavar="COL",
                    help="Parquet references: the id column (default: --id-column)")
    ap.add_argument("--reference-hash-column", default=None, metavar="COL",
                    help="Parquet references: hex hashes in COL instead of images (default: "
                         f"{job_inputs.OUTPUT_HASH_COLUMN} when the files have it)")
    ap.add_argument("--max-distance", type=_distance, default=0, metavar="K",
                    help="near-duplicates: drop images within K bits of a kept one (0: exact dedup; "
                         "auto: the measured threshold for the algorithm and hash size)")
    ap.add_argument("--dihedral", action="store_true",
                    help="near-duplicates: rotated and mirrored copies count as duplicates too")
    ap.add_argument("--keep", default=None, choices=KEEP_POLICIES,
                    help="near-duplicates: which image of a group is kept (default: largest)")
    ap.add_argument("--hash-column", default=None, metavar="COL",
                    help="Parquet: dedup the hex hashes in COL (an earlier run's image_phash, or "
                         "another tool's) without decoding images")
    ap.add_argument("--band-partition-bits", type=int, default=None, metavar="B",
                    help="near-duplicates: cut each band's search into 2^B partitions per sub-block "
                         "(for inputs too large for one band on one worker; default 0)")
    ap.add_argument("--search-partitions", type=int, default=None, metavar="S",
                    help="near-duplicates: band groups searched in parallel, each one copy of the "
                         "hashes through the shuffle (default 4)")
    ap.add_argument("--max-decode-failures", type=_fraction, default=None, metavar="FRACTION",
                    help="fail the run when more than this fraction of the inputs cannot be hashed "
                         "(default: no limit; failed inputs are listed in failed/)")
    ap.add_argument("--max-internal-failures", type=_fraction, default=DEFAULT_MAX_INTERNAL, metavar="FRACTION",
                    help="fail the run when more than this fraction of the inputs hit an internal "
                         f"error of the Rust code (a bug; default {DEFAULT_MAX_INTERNAL})")
    ap.add_argument("--no-report", action="store_true", help="skip report.html")
    return ap


#: The library's argument names in its messages, and this job's flags for them (names of plain
#: words, such as keep, are left: they read as prose too).
_FLAGS = (("backend='ray'", "--backend ray"), ("backend='state'", "--backend state"),
          ("dihedral=True", "--dihedral"), ("max_distance", "--max-distance"), ("hash_size", "--hash-size"),
          ("state_dir", "--state"), ("ray_address", "--ray-address"), ("backend_name", "--backend-name"),
          ("num_actors", "--num-actors"), ("num_buckets", "--num-buckets"),
          ("band_partition_bits", "--band-partition-bits"), ("search_partitions", "--search-partitions"),
          ("reference_hash_column", "--reference-hash-column"), ("hash_column", "--hash-column"),
          ("reference=", "--reference"),
          ("image_field", "--image-column"), ("id_field", "--id-column"), ("backend", "--backend"))


def as_flags(message: str) -> str:
    """A message of ImagePhashDedup's argument checks with this job's flag names; the values it
    quotes ('...', as repr gives them) are left as they are."""
    for name, flag in _FLAGS:
        if "'" in name:  # backend='ray': a name with its quoted value
            message = message.replace(name, flag)
    parts = re.split(r"('[^']*')", message)
    for i in range(0, len(parts), 2):  # the text between quoted values
        for name, flag in _FLAGS:
            parts[i] = re.sub(r"(?<![\w-])" + re.escape(name) + (r"(?!\w)" if name[-1].isalnum() else ""), flag,
                              parts[i])
    return "".join(parts)


def beam_flags() -> Set[str]:
    """Every flag Beam's options take, as typed (``--extra_package``, ``--experiment``,
    ``--no_use_public_ips``): the option strings of the parser Beam itself builds from its
    ``PipelineOptions`` classes. Not the options' names (``extra_packages``), which many flags
    are not."""
    flags: Set[str] = set()
    PipelineOptions([]).get_all_options(add_extra_args_fn=lambda parser: flags.update(
        flag for action in parser._actions for flag in action.option_strings))
    return flags


def check_beam_options(beam_args: List[str]) -> None:
    """Flags the job does not know go to Beam; one Beam does not know either is a typo
    (--hash_size for --hash-size), which Beam would only warn about and drop."""
    known = beam_flags()
    own = {flag for action in parser()._actions for flag in action.option_strings}
    for arg in beam_args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if "--" + name not in known:
            dashed = "--" + name.replace("_", "-")
            underscored = "--" + name.replace("-", "_")
            hint = (f" (did you mean {dashed}?)" if dashed in own else
                    f" (did you mean {underscored}?)" if underscored in known else "")
            raise ConfigError(f"unknown option --{name}{hint}")


#: Options that only one mode reads: (flag, ImagePhashDedup's argument, where it applies).
_MODE_OPTIONS = (("--num-buckets", "num_buckets", "exact mode with the Ray backend"),
                 ("--band-partition-bits", "band_partition_bits", "near-duplicate mode (--max-distance)"),
                 ("--search-partitions", "search_partitions", "near-duplicate mode (--max-distance)"))


def check_mode_options(args, near: bool) -> None:
    """An option the chosen mode would not read is refused rather than ignored (their defaults are
    None here, so only the options given are checked)."""
    applies = {"num_buckets": not near and args.backend != "state", "band_partition_bits": near,
               "search_partitions": near}
    for flag, name, where in _MODE_OPTIONS:
        if getattr(args, name) is not None and not applies[name]:
            raise ConfigError(f"{flag} applies to {where} only")


def mode_options(args) -> dict:
    """The mode options given, for ImagePhashDedup (the others keep its defaults)."""
    return {name: getattr(args, name) for _, name, _ in _MODE_OPTIONS if getattr(args, name) is not None}
