"""`python -m fetcher.cli` runs the command line."""

from fetcher.cli import main

main()
