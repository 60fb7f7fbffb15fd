"""The job's one configuration error."""


class ConfigError(Exception):
    """A problem with the command line, reported in one line before anything runs."""
