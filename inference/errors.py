"""The one exception type users of the library catch."""


class InferenceError(Exception):
    """A problem the user can fix (missing model, bad path, unsupported architecture …).

    The message is one line that says what to do.
    """
