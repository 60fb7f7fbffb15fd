"""What the job does before it imports Beam (about a second here): open the console, so that the
import's own warnings go to the log, and begin starting the embedded Ray when the run will need
one, so that Ray's processes come up while Beam is imported and the pipeline is built.

Light on purpose: argparse, and Ray only when it is started. A peek at the arguments, not their
check: a wrong guess costs a Ray started for nothing (stopped at exit) or started later, never a
different result. ``dedup_images`` checks everything afterwards.
"""
from __future__ import annotations

import argparse
import logging
from typing import List, Optional

DEFAULT_OUTPUT = "out/dedup"
#: Runners whose workers run on this machine: they can reach an embedded Ray, and the
#: launcher's progress board, on 127.0.0.1.
LOCAL_RUNNERS = (None, "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                 "PrismRunner", "FnApiRunner")


def _peek(argv: List[str]) -> Optional[argparse.Namespace]:
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--output", "--backend", "--ray-address", "--max-distance", "--runner"):
        ap.add_argument(flag)
    ap.add_argument("--dihedral", action="store_true")
    ap.add_argument("-h", "--help", action="store_true")
    try:
        args, _ = ap.parse_known_args(argv)
    except (SystemExit, argparse.ArgumentError):
        return None
    return None if args.help else args


def output_of(argv: List[str]) -> str:
    args = _peek(argv)
    return (args.output if args is not None and args.output else DEFAULT_OUTPUT)


def needs_embedded_ray(argv: List[str]) -> bool:
    """Whether the run will start an embedded Ray: exact mode with the Ray backend (the default),
    no --ray-address, and a runner on this machine."""
    args = _peek(argv)
    return (args is not None and args.backend in (None, "ray") and args.ray_address is None
            and args.max_distance in (None, "0") and not args.dihedral and args.runner in LOCAL_RUNNERS)


def wants_help(argv: List[str]) -> bool:
    """-h, --help, or an abbreviation argparse takes for it (--he, --hel; --h is ambiguous)."""
    return any(a == "-h" or (a.startswith("--he") and "--help".startswith(a)) for a in argv)


def begin(argv: List[str]) -> None:
    """Open the console and, when the run needs it, begin starting the embedded Ray."""
    from pipelines.console import open_console

    if wants_help(argv):
        # Help goes to the terminal and writes nothing under the output; the imports' warnings
        # (which the console would have sent to the log) are not shown with it.
        logging.disable(logging.WARNING)
        return
    open_console(output_of(argv))
    if needs_embedded_ray(argv):
        from beam_phash.exact import ray_cluster

        ray_cluster.start_local_ray_soon()


def loaded_ray_cluster():
    """``beam_phash.exact.ray_cluster`` if this process imported it (and so may have started an
    embedded Ray), else None: imported here, it would bring Ray along for nothing."""
    import sys

    return sys.modules.get("beam_phash.exact.ray_cluster")


def stop_ray_before_exit() -> None:
    """Before this process ends after a Ctrl-C: what of the embedded Ray would outlive it is
    stopped (``ray_cluster.stop_before_exit``). Nothing when Ray was never imported."""
    cluster = loaded_ray_cluster()
    if cluster is not None:
        cluster.stop_before_exit()
