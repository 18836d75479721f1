"""`python -m ftspec`: the `ftspec` command."""

from ftspec.cli import main

main()
