"""The commands that use a spec's trained model: export, generate and chat."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ftspec.cli.common import allow_option, profile_option, reports_errors, set_option, spec_options
from ftspec.commands.chat import chat as chat_with
from ftspec.commands.export import export as export_model
from ftspec.commands.export import export_promoted
from ftspec.commands.generate import generate as generate_answers
from ftspec.commands.generate import render_results


def _columns(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        name, eq, text = value.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"expected NAME=VALUE (got {value!r})", param_hint="--column")
        out[name] = text
    return out


@click.command()
@spec_options
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option("--column", "-c", "columns", multiple=True, metavar="NAME=VALUE",
              help="A column of the input row, as the spec's data files name it (repeatable); a TEXT fills the one "
                   "column left.")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines, one input row (the spec's columns) per line.")
@click.option("--base", "with_base", is_flag=True, help="Answer with the base model too, to compare.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Default: the plan's eval.max_new_tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per input: input, prompt, tuned (and base).")
@click.option("--show-prompt", is_flag=True, help="Print the prompt the model was given too.")
@reports_errors
def generate(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], texts: tuple[str, ...],
             columns: tuple[str, ...], file: Path | None, with_base: bool, max_new_tokens: int | None, as_json: bool,
             show_prompt: bool, allow: tuple[Path, ...] = ()) -> None:
    """Answer TEXT with the trained model, formatted exactly as training formatted its rows
    (data.rename and derive, the prompt template or the chat template)."""
    fixed = _columns(columns)
    results = generate_answers(spec, profiles, sets, allow, texts=texts, columns=fixed, file=file,
                               with_base=with_base, max_new_tokens=max_new_tokens)
    click.echo(render_results(results, as_json, show_prompt), nl=False)


@click.command()
@spec_options
@click.option("--base", "use_base", is_flag=True, help="Talk to the base model instead of the trained one.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Default: the plan's eval.max_new_tokens.")
@reports_errors
def chat(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], use_base: bool, max_new_tokens: int | None,
         allow: tuple[Path, ...] = ()) -> None:
    """Talk to the trained model of a chat-format spec: each line is a user turn, rendered
    with the spec's turns and chat template as in training. /reset starts again; /quit or Ctrl-D ends."""
    try:
        chat_with(spec, profiles, sets, allow, use_base=use_base, max_new_tokens=max_new_tokens, read=sys.stdin,
                  write=lambda t: click.echo(t, nl=False), note=lambda t: click.echo(t, nl=False, err=True),
                  interactive=sys.stdin.isatty())
    except KeyboardInterrupt:
        click.echo("", err=True)


@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@profile_option
@set_option
@allow_option
@click.option("--from", "promoted", metavar="NAME",
              help="Export the model promoted as NAME (promoted/NAME.json, `ftspec promote`) instead of SPEC's.")
@click.option("--output", "-o", "output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The folder to write (new, or empty; --force replaces one).")
@click.option("--adapter", "keep_adapter", is_flag=True,
              help="Keep a LoRA adapter as an adapter instead of merging it into its base.")
@click.option("--force", is_flag=True, help="Replace DIR when it exists and is not empty.")
@click.option("--gguf", "gguf", is_flag=False, flag_value="f32", default=None, metavar="[f32|f16]",
              type=click.Choice(["f32", "f16"], case_sensitive=False),
              help="Also write DIR/model.gguf (llama architecture), checked as transformers reads it back.")
@reports_errors
def export(spec: Path | None, profiles: tuple[str, ...], sets: tuple[str, ...], output: Path, keep_adapter: bool,
           force: bool, gguf: str | None = None, allow: tuple[Path, ...] = (), promoted: str | None = None) -> None:
    """Write the trained model of SPEC's run (or, with --from NAME, the model promoted as NAME)
    to DIR as a model that stands alone: merged (or --adapter), in the base's dtype, with its
    tokenizer, chat template, a generation config that stops where training taught it to, and
    a model card; checked against the trained model's logits (exit 1 above the tolerance, and
    nothing is written)."""
    if promoted is not None and (spec is not None or profiles or sets or allow):
        raise click.UsageError("give SPEC (with --profile/--set) or --from NAME, not both: a promotion records its "
                               "spec and variant")
    if promoted is None and spec is None:
        raise click.UsageError("give SPEC, or --from NAME for a promoted model")
    if promoted is not None:
        exported = export_promoted(promoted, output=output, adapter=keep_adapter, force=force, gguf=gguf,
                                   echo=click.echo)
    else:
        exported = export_model(spec, profiles, sets, allow, output=output, adapter=keep_adapter, force=force,
                                gguf=gguf, echo=click.echo)
    click.echo(exported.describe())
