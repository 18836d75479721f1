# Built-in templates, installed as the package `ftspec._templates` (see pyproject.toml)
# so that `{builtin: NAME}` finds them after any kind of install.
