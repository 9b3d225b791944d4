"""Real git: repository caches, speculative merges, workspaces, Depends-On."""
