"""`python -m interest` runs the CLI."""

from interest.cli import main

main()
