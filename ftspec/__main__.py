"""`python -m ftspec`: the `ftspec` command."""

from ftspec.cli import main

# Guarded: a worker process started with "spawn" imports this module again.
if __name__ == "__main__":
    main()
