"""The science: model, data, training recipe, evaluation and the results store. Knows nothing of HTTP or the CLI."""


class StudyError(Exception):
    """A problem the user can fix (bad input, missing data, unwritable dir): shown as one line, exit code 2."""
