"""What the `ftspec` commands do, callable from Python.

One module per behaviour. Each takes typed arguments, returns data (or prints through an
``echo`` callable it is handed) and raises ftspec.core.errors exceptions; none calls
sys.exit or click, so ftspec.cli and ftspec.api are thin wrappers over the same code.
"""
