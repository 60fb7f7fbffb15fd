"""Runnable Beam jobs built on beam_phash."""
