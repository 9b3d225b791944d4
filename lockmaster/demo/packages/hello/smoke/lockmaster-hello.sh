#!/bin/sh
# Smoke test for lockmaster-hello, run by `pkgtool.py install-test` inside the isolated root
# after the package is installed (see docs/packaging.md).
set -e
out=$(lockmaster-hello CI)
echo "lockmaster-hello said: $out"
test "$out" = "Hello from lockmaster, CI!"
