"""The runner of a job given no ``--runner``, and its state samplers, whose end no longer waits
for a 200 ms sleep (``pipelines/local_runner.py``)."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import statesampler
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.counters import CounterFactory

from pipelines import local_runner as runner_module
from pipelines.local_runner import SAMPLING_PERIOD_MS, local_runner


class SamplerPeriod(beam.DoFn):
    """Each element -> the sampling period of the state sampler running this bundle."""

    def process(self, element):
        yield statesampler.get_current_tracker().sampling_period_ms


def test_the_bundles_of_the_local_runner_sample_every_20_ms_at_most():
    """Beam's default is 200 ms, which the end of every long bundle waited out: the bundles the
    in-process runner runs get the shorter period, read from inside one of them."""
    assert statesampler.DEFAULT_SAMPLING_PERIOD_MS > SAMPLING_PERIOD_MS
    with beam.Pipeline(runner=local_runner(PipelineOptions([]))) as p:
        periods = p | beam.Create([1, 2, 3]) | "Period" >> beam.ParDo(SamplerPeriod())
        assert_that(periods, equal_to([SAMPLING_PERIOD_MS] * 3))


def test_a_period_given_to_the_sampler_still_wins():
    local_runner(PipelineOptions([]))
    factory = CounterFactory()
    assert statesampler.StateSampler("s", factory).sampling_period_ms == SAMPLING_PERIOD_MS
    assert statesampler.StateSampler("s", factory, 300).sampling_period_ms == 300
    assert statesampler.StateSampler("s", factory, sampling_period_ms=7).sampling_period_ms == 7


def test_a_named_runner_is_left_to_beam():
    assert local_runner(PipelineOptions(["--runner", "DirectRunner"])) is None


def test_a_sampler_that_takes_no_period_is_left_as_it_is(monkeypatch):
    """If a Beam upgrade changes the class, the job runs on Beam's own instead of failing."""

    class Other:
        def __init__(self, prefix, counter_factory):
            self.prefix = prefix

    monkeypatch.setattr(statesampler, "StateSampler", Other)
    assert runner_module._quicken_state_sampler() is False
    assert statesampler.StateSampler is Other
