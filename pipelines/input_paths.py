"""The paths a pipeline reads, for both readers of files (image files and WebDataset shards).

On a runner with several workers, the workers match the patterns and the matched paths are
reshuffled before they are read, so that the reading (and the hashing after it) of one
pattern's files is spread over the workers; without the reshuffle every file of a pattern is
read in the bundle that matched the pattern. When the pipeline runs on one worker in the
launcher's process, it takes the paths the launcher already listed (``listed``): matching them
again would repeat that listing, and there is nowhere to spread them to.
"""
from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
from apache_beam.io import fileio


class InputPaths(beam.PTransform):
    """The pipeline's root -> the paths of the files to read (directories left out)."""

    def __init__(self, patterns: List[str], listed: Optional[List[str]] = None):
        super().__init__()
        self._patterns = patterns
        self._listed = listed

    def expand(self, pbegin):
        if self._listed is not None:
            return pbegin | "Listed" >> beam.Create(self._listed, reshuffle=False)
        return (pbegin
                | "Patterns" >> beam.Create(self._patterns)
                | "Match" >> fileio.MatchAll()
                | "Paths" >> beam.FlatMap(lambda m: [] if m.path.endswith(("/", "\\")) else [m.path])
                | "Spread" >> beam.Reshuffle())
