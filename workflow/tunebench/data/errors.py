"""The one error type of the data layer."""


class DataError(ValueError):
    """A problem in an input file, named by file and line/row (or by the config key that set it up)."""
