"""The data workflows and activities exchange: one home, imported by both.

Everything here is a pydantic model with no I/O, safe to import inside the workflow sandbox.
"""
