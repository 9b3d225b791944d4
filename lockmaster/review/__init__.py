"""Review-system drivers: the local connection (embedded default) and Gerrit."""
