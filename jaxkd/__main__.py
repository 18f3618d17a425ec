"""python -m jaxkd <command> [--flags]: see jaxkd.cli."""

from jaxkd.cli import main

main()
