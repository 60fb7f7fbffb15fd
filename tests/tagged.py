"""One PCollection of (tag, record) from a transform's outputs, for checks that need every output
together (no Ray: near-duplicate and state-backend tests import this, not test_transform)."""
import apache_beam as beam


def tagged(outputs):
    kept, dups, failed = outputs[:3]
    return ((kept | "TagKept" >> beam.Map(lambda r: ("kept", r)),
             dups | "TagDups" >> beam.Map(lambda r: ("duplicates", r)),
             failed | "TagFailed" >> beam.Map(lambda r: ("failed", r)))
            | "AllOutputs" >> beam.Flatten())
