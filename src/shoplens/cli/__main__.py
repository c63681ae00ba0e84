"""``python -m shoplens.cli``."""

from shoplens.cli import main

main()
