"""The one exception the gate raises for problems a user can fix."""


class GateError(Exception):
    """A problem with the input, the host or the image: printed as one line, exit code 2."""
