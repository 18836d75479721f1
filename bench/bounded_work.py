"""How long hostile input takes to be refused, and how long the heavy evaluation
statistics take: the speed targets that the tests, which assert only which bound
stopped an input (a count of steps, tokens, values, rows), do not time.

    python bench/bounded_work.py [--runs 3] [--only NAME] [--quick]

Each case runs --runs times in this process (the CLI's imports done once, first) and
prints its median wall time next to its target; the template cases also print the steps
their renderings took. Last line: `bounded_work slowest/target=X.XX` (at most 1 is the aim).
Timings depend on the machine: compare runs on the same one.

--quick: every case once (each is bounded: the whole takes about ten seconds); the
figures mean nothing (for CI: the script still runs and every input is still refused).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _quick import add_quick, say_quick  # noqa: E402

ROWS = "".join(json.dumps({"text": f"request {i}", "queue": "billing"}) + "\n" for i in range(600))
SPEC = """ftspec: 1
name: bench
model: {{kind: tiny, hidden_size: 32, num_heads: 4}}
data:
  train: train.jsonl
{data}format:
  kind: prompt_completion
  prompt: {prompt}
  completion: " {{{{ queue }}}}"
training: {{max_length: 256}}
{extra}"""


def _validate(prompt: str = "'{{ text }}'", data: str = "  split: {validation: 0.25}\n", extra: str = "",
              rows: str = ROWS) -> Callable[[], object]:
    """A case: `ftspec validate` of a spec in a fresh folder; it must exit 2 (refused)."""
    from click.testing import CliRunner

    from ftspec.cli import main

    def run() -> object:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp)
            (repo / ".git").mkdir()
            (repo / "train.jsonl").write_text(rows)
            (repo / "spec.yaml").write_text(SPEC.format(prompt=prompt, data=data, extra=extra))
            cwd = os.getcwd()
            os.chdir(repo)
            try:
                result = CliRunner().invoke(main, ["validate", "spec.yaml"])
            finally:
                os.chdir(cwd)
        if result.exit_code != 2:
            raise SystemExit(f"expected a refusal, got exit {result.exit_code}:\n{result.output[-500:]}")
        return result.output.strip().splitlines()[0][:110]

    return run


def _steps(source: str) -> Callable[[], object]:
    """A case: one rendering in the sandbox, with the wall-clock backstop off."""
    from ftspec.data import sandbox
    from ftspec.data import templates as tpl

    template = tpl.environment().from_string(source)

    def run() -> object:
        what = "rendered"
        with sandbox.metered() as meter:
            try:
                template.render({})
            except sandbox.TemplateLimit as exc:
                what = str(exc)
        return f"{meter.steps} steps: {what}"

    return run


def _intervals(rows: int, labels: int, models: int, names: tuple[str, ...]) -> Callable[[], object]:
    from ftspec.runtime.evaluation import intervals

    rnd = random.Random(0)
    refs = [f"answer {rnd.randrange(labels)}" for _ in range(rows)]
    preds = {f"m{i}": [r if rnd.random() < 0.7 else "x" for r in refs] for i in range(models)}
    metrics = [{"name": n, "extract": None} for n in names]

    def run() -> object:
        intervals.bootstrap_intervals(metrics, refs, preds)
        return f"{len(metrics)} metrics x {models} models x {rows} rows, {labels} labels"

    return run


def _regex() -> Callable[[], object]:
    from ftspec.runtime.evaluation.extraction import extract

    return lambda: repr(extract("a" * 40 + "!", {"regex": r"(a|aa)+$"}))


def _yaml_deep() -> Callable[[], object]:
    import subprocess

    def run() -> object:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "deep.yaml").write_text("ftspec: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n")
            proc = subprocess.run([sys.executable, "-m", "ftspec", "validate", "deep.yaml"], cwd=tmp,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
        return proc.stderr.splitlines()[0][:110]

    return run


NESTED = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
SLOW_ROW = "{% for i in range(6) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"

# name: (target seconds, case)
CASES: dict[str, tuple[float, Callable[[], Callable[[], object]]]] = {
    "render-nested-loops": (1.0, lambda: _steps(NESTED)),
    "render-macro-fan-out": (1.0, lambda: _steps(
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}")),
    "render-loop-method-calls": (1.0, lambda: _steps(
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ (j ~ 'x').upper() }}{% endfor %}{% endfor %}")),
    "render-lazy-filters": (1.0, lambda: _steps(
        "{% for i in range(10000) %}{{ range(10000) | map('string') | map('upper') | list | length }}{% endfor %}")),
    "validate-nested-loops": (3.0, lambda: _validate(prompt="'" + NESTED + "{{ text }}'")),
    "validate-slow-on-every-row": (8.0, lambda: _validate(
        prompt="'" + SLOW_ROW + "{{ text }}'", data="  validation: train.jsonl\n  test: train.jsonl\n")),
    "validate-5000-unknown-keys": (10.0, lambda: _validate(
        extra="eval:\n" + "".join(f"  unknown_key_number_{i}: 1\n" for i in range(5000)))),
    "validate-3000-missing-columns": (3.0, lambda: _validate(
        prompt="'" + "".join(f"{{{{ missing_{i} }}}}" for i in range(3000)) + "'")),
    "validate-wide-data-unknown-names": (10.0, lambda: _validate(
        rows="".join(json.dumps({**{f"column_{i}": "v" for i in range(9000)}, "text": f"r{j}", "queue": "b"}) + "\n"
                     for j in range(8)),
        data="  split: {validation: 0.25}\n  derive:\n" + "".join(
            f"    d{j}: '" + "".join(f"{{{{ colum_{j * 20 + i} }}}}" for i in range(20)) + "'\n" for j in range(100)))),
    "yaml-5000-deep-fresh-process": (10.0, _yaml_deep),
    "regex-backtracking-extraction": (3.0, _regex),
    "bootstrap-4x2x2000": (10.0, lambda: _intervals(2000, 4, 2, ("accuracy", "f1_macro", "f1", "exact_match"))),
    "bootstrap-many-labels-3000": (20.0, lambda: _intervals(3000, 1500, 1, ("f1_macro", "f1_micro"))),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="default 3; --quick: 1")
    parser.add_argument("--only", help="Run only the cases whose name contains this.")
    add_quick(parser)
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    say_quick(args.quick)
    _validate()  # the CLI's imports, once
    worst = 0.0
    print(f"{'case':34} {'median s':>9} {'target s':>9}  what stopped it")
    for name, (target, make) in CASES.items():
        if args.only and args.only not in name:
            continue
        case = make()
        times, what = [], None
        for _ in range(args.runs):
            start = time.perf_counter()
            what = case()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        worst = max(worst, median / target)
        print(f"{name:34} {median:9.3f} {target:9.1f}  {what}")
    print(f"bounded_work slowest/target={worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
