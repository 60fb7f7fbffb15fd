"""Outputs emitted after their input's ``process`` call (while a later element is processed, or in
``finish_bundle``) would take that later element's window, or none: :func:`in_window` gives them
their own input's timestamp and window, tagged outputs included. Steps that join in the global
window (a reference, the near-duplicate search) carry each batch's own with :func:`with_window`
and give it back with :func:`in_window`, as Beam's Reshuffle carries them."""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue


def with_window(batch, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
    """``batch`` -> (batch, its timestamp, its window), for ``beam.Map`` before a re-windowing."""
    return batch, timestamp, window


def in_window(outputs: Iterable, timestamp, window) -> Iterable:
    for out in outputs:
        if isinstance(out, TaggedOutput):
            yield TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
        else:
            yield WindowedValue(out, timestamp, [window])
