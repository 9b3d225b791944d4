# Shortcuts for the README's commands.
.PHONY: run test test-fast
run:
	./scripts/run
test:
	./scripts/test
test-fast:
	./scripts/test -m "not slow"
