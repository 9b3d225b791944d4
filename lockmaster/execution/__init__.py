"""Running one build: node, workspace, commands, log, result."""
