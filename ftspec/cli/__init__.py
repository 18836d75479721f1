"""The `ftspec` command: argument parsing only.

Each command parses its arguments, calls one function of ftspec.commands and turns what
it returns or raises into output and an exit status (ftspec.cli.common). The commands that
need torch import it inside the functions that need it, so a typo in a spec is reported
in a fraction of the time it takes to import torch.
"""

from __future__ import annotations

import click

from ftspec import __version__
from ftspec.cli import launch, model, promote, remote, run, runs, spec, sweep


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ftspec")
def main() -> None:
    """ftspec: one YAML spec per fine-tuning job, validated, planned, reviewed and run."""


for _command in (spec.validate, spec.plan, spec.schema, spec.templates, spec.diff, spec.lock,
                 run.run, run.eval_, run.report, run.status, run.stop, sweep.sweep_cmd,
                 runs.runs, runs.gc, remote.push, remote.pull,
                 model.export, model.generate, model.chat, promote.promote,
                 launch.launch_script):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
