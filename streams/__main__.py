"""`python -m streams ...` is the `aps` command (used to spawn worker processes)."""

from streams.cli import main

main()
