"""Pipeline logic as pure functions: no I/O, deterministic, usable inside workflows and in tests.

Zuul's split: this decides; workflows orchestrate; activities and drivers touch the world.
"""
