"""The end of a run that keeps state: the commit to its state directory, once the steps it waits
for are done, applied by the transform itself or, deferred, by the caller after its writes."""
from __future__ import annotations

import copy
import weakref
from typing import Callable, Optional, Sequence

import apache_beam as beam

#: An end: (the steps to wait for, its label) -> applies it to the pipeline.
End = Callable[[Sequence[beam.PCollection], str], object]

#: The label of a commit not given one; a second in one pipeline is "CommitDedup2", and so on.
COMMIT_LABEL = "CommitDedup"

#: Per pipeline, the state directories a run of it commits to.
_state_dirs: "weakref.WeakKeyDictionary[beam.Pipeline, set]" = weakref.WeakKeyDictionary()


def claim_state_dir(pipeline: beam.Pipeline, state_dir: str) -> None:
    """Note that a run of ``pipeline`` commits to ``state_dir``; a second application in the same
    pipeline is refused now, while it is built (its run would fail at the second commit, after
    the first had landed: one run at a time per state directory)."""
    taken = _state_dirs.setdefault(pipeline, set())
    if state_dir in taken:
        raise ValueError(f"state directory {state_dir} is already used by another dedup step of this pipeline "
                         "(one run at a time per state directory): give each step its own")
    taken.add(state_dir)


def _upstream(steps: Sequence[beam.PCollection]) -> set:
    """The ids of ``steps`` and of every PCollection they are computed from (side inputs too)."""
    seen: set = set()
    todo = list(steps)
    while todo:
        pcoll = todo.pop()
        if id(pcoll) in seen:
            continue
        seen.add(id(pcoll))
        producer = getattr(pcoll, "producer", None)
        if producer is not None:
            todo.extend(producer.inputs)
            todo.extend(side.pvalue for side in producer.side_inputs)
    return seen


def _apply_end(end: End, after: Sequence[beam.PCollection], label: Optional[str]) -> None:
    """``end`` labelled ``label``, or by default ``COMMIT_LABEL``, numbered from 2 while the
    pipeline (or the composite it is applied in) already has a step of that label."""
    if label:
        end(after, label)
        return
    n = 1
    while True:
        try:
            end(after, COMMIT_LABEL if n == 1 else f"{COMMIT_LABEL}{n}")
            return
        except RuntimeError as e:  # Beam refuses a label in use before it applies anything
            if "already exists in the pipeline" not in str(e):
                raise
            n += 1


class RunEnd:
    """Mixin of the dedup transforms that commit a state at their end (``ExactDedup``,
    ``NearDedup``): :meth:`after`, :meth:`with_deferred_commit` and :meth:`commit`. Their
    ``expand`` hands its end to :meth:`_end`."""

    _after: tuple = ()
    _deferred = False

    def _init_end(self) -> None:
        self._after = ()
        self._deferred = False
        # (pipeline, end or None) per application of a deferred transform, not committed yet;
        # shared by the copies made from one with_deferred_commit() (after(), ImagePhashDedup's).
        self._ends: list = []
        # Per application, in order: () -> whether its run committed, or None (nothing to commit).
        # Shared by every copy, so the transform a caller built answers for the copy it applied.
        self._commits: list = []

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
        other._ends = []
        return other

    def commit(self, *after: beam.PCollection, label: Optional[str] = None) -> None:
        """Apply the end the transform (built :meth:`with_deferred_commit`) left when it was
        applied, once ``after`` (PCollections in the global window: the writes' results) and the
        steps given to :meth:`after` are done. Where the run has no end to wait for (no state
        directory and nothing to release, a stream) it applies nothing. Once per application:
        each call applies the end of the application not committed yet (in the pipeline of
        ``after``) whose outputs ``after`` is computed from, or when that is not one application,
        the earliest; labelled ``label`` or, by default, ``CommitDedup`` (``CommitDedup2`` for a
        second in the pipeline, and so on).

        A deferred transform whose commit is never applied commits nothing, and on a Ray cluster
        that outlives the pipeline leaves its one-run actors alive (see ``release()``)."""
        if not self._deferred:
            raise ValueError("commit() is for a transform built with with_deferred_commit(); this one "
                             "commits by itself once every record has its fate")
        pipelines = {id(step.pipeline) for step in after}
        if len(pipelines) > 1:
            raise ValueError("commit() waits for steps of one pipeline; these belong to several")
        candidates = [e for e in self._ends if not pipelines or id(e[0]) in pipelines]
        if not candidates:
            raise ValueError("commit() applies the end of a transform built with with_deferred_commit() once it "
                             "is applied to the pipeline of the steps it waits for (once per application)")
        mine = candidates[0]
        if len(candidates) > 1 and after:
            upstream = _upstream(after)
            fed = [e for e in candidates if e[2] & upstream]
            if len(fed) == 1:  # the application whose outputs these steps write
                mine = fed[0]
        self._ends.remove(mine)
        end = mine[1]
        if end is not None:
            _apply_end(end, after, label)

    def committed(self) -> bool:
        """Whether the run of the transform's last application committed to its state directory.
        After a pipeline failed or was stopped, a committed run's outputs are the ones its state
        now holds as kept (a rerun finds their images there): keep them. False before the
        transform is applied and without a run to commit: no state directory, a named Ray backend
        or a stream. (Those two commit each claim as it is answered: with a ``state_dir`` their
        claims are in it whatever this says, and a rerun keeps their records only under the same
        ids.)"""
        check = self._commits[-1] if self._commits else None
        return check is not None and check()

    def _end(self, pipeline: beam.Pipeline, end, label: str,
             committed: Optional[Callable[[], bool]] = None, outputs: Sequence[beam.PCollection] = ()) -> None:
        """Apply ``end`` (or None: this application has no end) now, waiting for the steps of
        :meth:`after`, or leave it to :meth:`commit`; ``committed``: what :meth:`committed` asks
        of this application (None: it has no run to commit); ``outputs``: the application's, by
        which :meth:`commit` tells its end from another application's."""
        self._commits.append(committed)
        if self._deferred:
            self._ends.append((pipeline, end, frozenset(id(o) for o in outputs)))
        elif end is not None:
            end((), label)
