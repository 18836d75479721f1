"""Package discovery (the rest of the build is in pyproject.toml).

Every package under ftspec/ is found, so a new subpackage cannot drop out of the wheel; the built-in
templates live at the top of the repository (templates/, where users look for them) and are installed
as the package ftspec._templates (package-dir in pyproject.toml), which discovery cannot see.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["ftspec", "ftspec.*"]), "ftspec._templates"])
