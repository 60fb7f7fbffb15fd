"""The runner of a job given no ``--runner``, and its state samplers, whose end no longer waits
for a 200 ms sleep while the job runs (``pipelines/local_runner.py``)."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import statesampler
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.counters import CounterFactory

from pipelines.local_runner import SAMPLING_PERIOD_MS, local_runner, quick_state_samplers


class SamplerPeriod(beam.DoFn):
    """Each element -> the sampling period of the state sampler running this bundle (Beam's
    ``StateSampler`` hands the same number to its sampling loop)."""

    def process(self, element):
        yield statesampler.get_current_tracker().sampling_period_ms


def periods_on(runner, quick: bool):
    """The periods the bundles of a small pipeline on ``runner`` sample at."""
    p = beam.Pipeline(runner=runner, options=PipelineOptions([]))
    periods = p | beam.Create([1, 2, 3]) | "Period" >> beam.ParDo(SamplerPeriod())
    expected = SAMPLING_PERIOD_MS if quick else statesampler.DEFAULT_SAMPLING_PERIOD_MS
    assert_that(periods, equal_to([expected] * 3))
    return p


def test_while_the_job_runs_its_bundles_sample_every_20_ms_at_most_and_beams_period_after():
    """Beam's default is 200 ms, which the end of every long bundle waited out: read from inside
    running bundles, the job's runner gets the shorter period while it runs, and Beam's class is
    back once it has."""
    beams = statesampler.StateSampler
    assert statesampler.DEFAULT_SAMPLING_PERIOD_MS > SAMPLING_PERIOD_MS
    runner = local_runner(PipelineOptions([]))
    p = periods_on(runner, quick=True)
    with quick_state_samplers(runner) as quick:
        assert quick
        p.run().wait_until_finish()
    assert statesampler.StateSampler is beams
    periods_on(local_runner(PipelineOptions([])), quick=False).run().wait_until_finish()


def test_a_period_given_to_the_sampler_still_wins():
    beams, factory = statesampler.StateSampler, CounterFactory()
    with quick_state_samplers(local_runner(PipelineOptions([]))) as quick:
        assert quick
        assert statesampler.StateSampler("s", factory).sampling_period_ms == SAMPLING_PERIOD_MS
        assert statesampler.StateSampler("s", factory, 300).sampling_period_ms == 300
        assert statesampler.StateSampler("s", factory, sampling_period_ms=7).sampling_period_ms == 7
        with quick_state_samplers(local_runner(PipelineOptions([]))) as again:  # nested: one subclass
            assert again and statesampler.StateSampler.__base__ is beams
    assert statesampler.StateSampler is beams


def test_a_named_runner_is_left_to_beam():
    beams = statesampler.StateSampler
    runner = local_runner(PipelineOptions(["--runner", "DirectRunner"]))
    assert runner is None
    with quick_state_samplers(runner) as quick:
        assert not quick and statesampler.StateSampler is beams


class Moved:
    """A sampler whose period is not its third argument."""

    def __init__(self, sampling_period_ms, prefix, counter_factory):
        self.sampling_period_ms = sampling_period_ms


class Unknown:
    def __init__(self, prefix, counter_factory):
        self.prefix = prefix


@pytest.mark.parametrize("other", [Moved, Unknown], ids=["period moved", "no period"])
def test_a_sampler_that_takes_its_period_otherwise_is_left_as_it_is(monkeypatch, other):
    """If a Beam upgrade changes the class, the job runs on Beam's own instead of failing."""
    monkeypatch.setattr(statesampler, "StateSampler", other)
    with quick_state_samplers(local_runner(PipelineOptions([]))) as quick:
        assert not quick and statesampler.StateSampler is other
