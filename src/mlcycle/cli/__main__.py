"""`python -m mlcycle.cli`: the same as the `mlcycle` console script."""

from mlcycle.cli import main

main()
