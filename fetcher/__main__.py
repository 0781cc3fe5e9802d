"""`python -m fetcher` runs the command line."""

from fetcher.cli import main

main()
