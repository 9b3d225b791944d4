class TEError(Exception):
    """A test environment could not be had or kept, or an operator command was refused."""
