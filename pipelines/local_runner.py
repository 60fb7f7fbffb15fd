"""The runner of a job given no ``--runner``: Beam's in-process FnApiRunner, and the one place
where the job reaches into Beam's worker internals to run it.

Checked against apache-beam 2.77 (pyproject.toml allows >= 2.60). If an upgrade moves what
:func:`_quicken_state_sampler` replaces, it does nothing (``tests/test_local_runner.py`` fails
first), and the job runs as Beam's defaults have it.

* ``apache_beam.runners.worker.statesampler.StateSampler``: every bundle starts a thread that
  samples which step is running (Beam's ``msecs`` counters). Between samples it sleeps, from 2 ms
  growing to ``DEFAULT_SAMPLING_PERIOD_MS`` (200 ms), and the bundle's end joins it; the sleep
  cannot be woken, so a bundle longer than about a second ended up to 0.2 s late. The job's
  main stage is one such bundle: of ten warm jobs on 10,000 images, three took 3.53 s and seven
  3.32-3.35 s (``docs/performance-record.md``, 2026-12-07). The in-process runner's samplers wake
  every ``SAMPLING_PERIOD_MS`` instead; a sampling thread is one per running bundle, and waking
  it 50 times a second costs nothing measurable.
"""
from __future__ import annotations

import inspect

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

#: The longest sleep of the in-process runner's state samplers (Beam's default: 200 ms).
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

    _quicken_state_sampler()
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def _quicken_state_sampler() -> bool:
    """Has this process's bundles sample every ``SAMPLING_PERIOD_MS`` at most (see the module's
    docstring): Beam's ``StateSampler`` is replaced, in its module, by a subclass whose default
    period is that. Whether it is in place; False (nothing changed) when Beam's class does not
    take the period as it did when this was written."""
    from apache_beam.runners.worker import statesampler

    sampler = statesampler.StateSampler
    if getattr(sampler, "quickened", False):
        return True
    try:
        period = inspect.signature(sampler.__init__).parameters.get("sampling_period_ms")
    except (TypeError, ValueError):
        return False
    if period is None or period.default is inspect.Parameter.empty:
        return False

    class QuickStateSampler(sampler):  # type: ignore[misc, valid-type]
        quickened = True

        def __init__(self, *args, **kwargs):
            if len(args) < 3:  # (prefix, counter_factory[, sampling_period_ms]): a period given wins
                kwargs.setdefault("sampling_period_ms", SAMPLING_PERIOD_MS)
            super().__init__(*args, **kwargs)

    statesampler.StateSampler = QuickStateSampler
    return True
