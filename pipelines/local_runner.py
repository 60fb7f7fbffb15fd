"""The runner of a job given no ``--runner``: Beam's in-process FnApiRunner, and the one place
where the job reaches into Beam's worker internals while it runs there.

Checked against apache-beam 2.78 (pyproject.toml allows >= 2.60). If an upgrade moves what
:func:`quick_state_samplers` replaces, it changes nothing (``tests/test_local_runner.py`` fails
first), and the job runs as Beam's defaults have it.

* ``apache_beam.runners.worker.statesampler.StateSampler``: every bundle starts a thread that
  samples which step is running (Beam's ``msecs`` counters). Between samples it sleeps, from 2 ms
  growing to ``DEFAULT_SAMPLING_PERIOD_MS`` (200 ms), and the bundle's end joins it; the sleep
  cannot be woken, so a bundle longer than about a second ends up to 0.2 s late, and the job's
  main stage is one such bundle (``docs/performance-record.md``, 2026-12-07). While the job runs,
  the bundles run in its own process sample every ``SAMPLING_PERIOD_MS`` at most instead: a
  sampling thread is one per running bundle, and waking it 50 times a second costs nothing
  measurable. Bundles in worker processes (``--direct_running_mode=multi_processing``) keep
  Beam's period, and so does every pipeline run in the process after the job.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

#: The longest sleep of the state samplers of the job's own process (Beam's default: 200 ms).
SAMPLING_PERIOD_MS = 20


def local_runner(options: PipelineOptions):
    """The runner of a job given no ``--runner``: Beam's in-process FnApiRunner, set up as the
    DirectRunner sets it up. The DirectRunner itself would first try Prism, downloading its
    binary when the machine is online (a quarter of a second of failed attempt when it is not),
    so the same command would run on two different runners depending on the network. None when
    a runner is named."""
    if options.view_as(StandardOptions).runner is not None:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


@contextlib.contextmanager
def quick_state_samplers(runner) -> Iterator[bool]:
    """While inside, the bundles this process runs sample every ``SAMPLING_PERIOD_MS`` at most
    when ``runner`` is :func:`local_runner`'s (not None): Beam's ``StateSampler`` is replaced, in
    its module, by a subclass with that default period, and put back on the way out. Yields
    whether the subclass is in place: False (nothing changed) for a named runner, or when Beam's
    class does not take its period as it did when this was written (see the module's docstring)."""
    from apache_beam.runners.worker import statesampler

    beams = statesampler.StateSampler
    quick = None if runner is None or getattr(beams, "quickened", False) else _quickened(beams)
    if quick is None:
        yield getattr(beams, "quickened", False)
        return
    statesampler.StateSampler = quick
    try:
        yield True
    finally:
        if statesampler.StateSampler is quick:
            statesampler.StateSampler = beams


def _quickened(sampler):
    """A subclass of Beam's ``sampler`` class whose default period is at most
    ``SAMPLING_PERIOD_MS``; None unless its ``__init__`` is ``(self, prefix, counter_factory,
    sampling_period_ms=<a number>)``, as in the Beam versions this was checked against."""
    try:
        params = list(inspect.signature(sampler.__init__).parameters.values())
    except (TypeError, ValueError):
        return None
    if (len(params) != 4 or params[3].name != "sampling_period_ms"
            or params[3].kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD
            or not isinstance(params[3].default, (int, float))):
        return None
    period = min(params[3].default, SAMPLING_PERIOD_MS)

    class QuickStateSampler(sampler):  # type: ignore[misc, valid-type]
        quickened = True

        def __init__(self, prefix, counter_factory, sampling_period_ms=period):
            super().__init__(prefix, counter_factory, sampling_period_ms)

    return QuickStateSampler
