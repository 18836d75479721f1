"""ftspec: one YAML spec per fine-tuning job, validated, compiled to a plan, and run."""

__version__ = "0.1.0"
