"""`python -m snnc` runs the command line, as the `snnc` script does."""
from snnc.cli import main

main()
