"""The end of a run that keeps state: the commit to its state directory, once the steps it waits
for are done, applied by the transform itself or, deferred, by the caller after its writes."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import apache_beam as beam

#: An end: (the steps to wait for, its label) -> applies it to the pipeline.
End = Callable[[Sequence[beam.PCollection], str], object]


class RunEnd:
    """Mixin of the dedup transforms that commit a state at their end (``ExactDedup``,
    ``NearDedup``): :meth:`after`, :meth:`with_deferred_commit` and :meth:`commit`. Their
    ``expand`` hands its end to :meth:`_end`."""

    _after: tuple = ()
    _deferred = False

    def _init_end(self) -> None:
        self._after = ()
        self._deferred = False
        self._ends: list = []  # shared with copies: the ends a deferred transform left for commit()

    def after(self, *steps: beam.PCollection):
        """The same transform, committing its run to the state directory only once ``steps``
        (PCollections in the global window, such as a failure check's output) are done: a step
        that fails then fails the run before its commit."""
        other = copy.copy(self)
        other._after = steps
        return other

    def with_deferred_commit(self):
        """The same transform, leaving its run's end (the commit to the state directory; for a
        one-run Ray backend also its release) to :meth:`commit`, which must then be called once
        the transform is applied."""
        other = copy.copy(self)
        other._deferred = True
        return other

    def commit(self, *after: beam.PCollection, label: str = "CommitDedup") -> None:
        """Apply the end the transform (built :meth:`with_deferred_commit`) left when it was
        applied, once ``after`` (PCollections in the global window: the writes' results) and the
        steps given to :meth:`after` are done. A no-op where the run has no end to wait for (no
        state directory and nothing to release, a stream)."""
        if not self._deferred:
            raise ValueError("commit() is for a transform built with with_deferred_commit(); this one "
                             "commits by itself once every record has its fate")
        ends, self._ends[:] = list(self._ends), []
        for end in ends:
            end(after, label)

    def _end(self, end: End, label: str) -> None:
        """Apply ``end`` now (waiting for the steps of :meth:`after`), or leave it to :meth:`commit`."""
        if self._deferred:
            self._ends.append(end)
        else:
            end((), label)
