"""Worker processes, one per role (each polls its own task queue), and one running every role."""
