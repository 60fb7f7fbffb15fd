"""Failure thresholds: a run whose inputs fail too often stops with a clear error.

Failed records are data (the ``failed`` output, each with its reason), so one bad image never
stops a run. But a run where most images fail to decode (a wrong column, a format this build
cannot read) or where the Rust code fails on many (a bug) should not end as a "success" that kept
nothing. The hashing step tallies, per batch, its inputs, the inputs that could not be hashed
(undecodable or missing image bytes, or an unparsable hash with ``hash_column``) and those that
hit an internal error (``beam_phash.InternalError``: a caught panic). ``CheckFailures`` sums the
tallies once every input is hashed (on a stream, its running totals as each tally arrives, once
they count at least 1 / threshold inputs), and
raises :class:`FailureThresholdError` when a fraction is over its threshold: off by default for
decode failures, 0.001 for internal errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms import trigger

#: The hashing step's output of per-batch tallies.
TALLY = "tally"
#: The default threshold for internal errors: more than 1 input in 1000 fails the run.
DEFAULT_MAX_INTERNAL = 0.001


class FailureThresholdError(RuntimeError):
    """Too many inputs failed; the message says how many, of what kind, and what to do."""


class Tally(NamedTuple):
    inputs: int = 0
    decode: int = 0  # could not be hashed: not an image, corrupt, no image bytes
    internal: int = 0  # the Rust code failed (InternalError)


@dataclass(frozen=True)
class FailureThreshold:
    """The largest fraction of inputs (0-1) that may fail to decode (``decode``; None: no limit)
    or hit an internal error (``internal``; None: no limit) before the run fails."""

    decode: Optional[float] = None
    internal: Optional[float] = DEFAULT_MAX_INTERNAL

    def __post_init__(self):
        for name in ("decode", "internal"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1):
                raise ValueError(f"failure threshold {name} must be a fraction between 0 and 1, or None; "
                                 f"got {value!r}")

    def check(self, tally: Tally, running: bool = False) -> None:
        """FailureThresholdError when a fraction of ``tally.inputs`` is over its threshold.
        ``running``: a stream's totals so far, checked against a threshold only once they count
        enough inputs (``ceil(1 / threshold)``) that one failure alone is not over it."""
        if tally.inputs == 0:
            return
        for kind, count, limit, what in (
                ("internal", tally.internal, self.internal,
                 "hit an internal error in the Rust code (a bug: please report it with one of them)"),
                ("decode", tally.decode, self.decode, "could not be hashed")):
            if running and limit and tally.inputs < math.ceil(1 / limit):
                continue
            if limit is not None and count / tally.inputs > limit:
                raise FailureThresholdError(
                    f"{count} of {tally.inputs} inputs ({100 * count / tally.inputs:.1f}%) {what}, over the "
                    f"failure threshold of {100 * limit:g}% ({kind}); the failed output lists each with "
                    f"its reason")


def _add(tallies: Iterable[Tally]) -> Tally:
    total = [0, 0, 0]
    for t in tallies:
        for i, v in enumerate(t):
            total[i] += v
    return Tally(*total)


class CheckFailures(beam.PTransform):
    """Per-batch tallies -> nothing, or a failed run (``FailureThresholdError``) once the sums
    are over the threshold."""

    def __init__(self, threshold: FailureThreshold):
        super().__init__()
        self._threshold = threshold

    def expand(self, tallies):
        threshold = self._threshold
        # A stream never ends: its running totals are checked as each tally arrives (once they
        # count enough inputs). A check over its threshold then fails its step at every firing: a
        # runner that retries streaming work for ever (Dataflow) stalls there, logging the error.
        streaming = {} if tallies.is_bounded else dict(
            trigger=trigger.Repeatedly(trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING)
        # One key rather than CombineGlobally: no default value is needed (no tally, nothing to
        # check), and CombineGlobally's machinery for it is ten transforms of its own.
        return (tallies
                | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows(), **streaming)
                | "OneKey" >> beam.Map(lambda t: (None, t))
                | "Sum" >> beam.CombinePerKey(_add)
                | "Check" >> beam.Map(lambda kv, running=bool(streaming): threshold.check(Tally(*kv[1]), running)))
