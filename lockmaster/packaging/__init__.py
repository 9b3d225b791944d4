"""Package tooling that packaging jobs upload to build nodes (see pkgtool.py, docs/packaging.md)."""
