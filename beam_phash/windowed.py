"""Outputs emitted after their input's ``process`` call (while a later element is processed, or in
``finish_bundle``) would take that later element's window, or none: :func:`in_window` gives them
their own input's timestamp and window, tagged outputs included."""
from __future__ import annotations

from typing import Iterable

from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue


def in_window(outputs: Iterable, timestamp, window) -> Iterable:
    for out in outputs:
        if isinstance(out, TaggedOutput):
            yield TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
        else:
            yield WindowedValue(out, timestamp, [window])
