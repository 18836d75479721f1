"""Mutation checks: each claim a test makes is shown to hold by breaking the feature on
purpose and watching that test fail.

Each row of MUTATIONS names a file, an exact text in it (found exactly once, else the
mutation has rotted and this script fails loudly), its replacement, and the pytest node
ids that must FAIL once it is applied. Every mutation is applied to a fresh copy of the
repository's ftspec/ and tests/ (the working tree is never touched), and the named tests
run there. A mutation whose tests still pass has survived: the claim is untested, and the
script exits 1.

    python bench/mutations.py            # every row (CI runs this)
    python bench/mutations.py digest     # the rows whose name contains "digest"
    python bench/mutations.py --quick    # only check that every row still applies exactly once (no test runs)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import say_quick  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("ftspec", "tests", "specs", "templates", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


DIST = "tests/runtime/distributed/test_distributed.py::"
PROOFS = "tests/test_field_proofs.py::"
BEDROCK_RUN = "tests/backends/bedrock/test_bedrock_run.py::"
RECORD_WRITE = ('        write_json(record_file, {"job_arn": arn, "attempt": attempt, "region": b.region, '
                '"earlier": earlier})\n')

MUTATIONS = [
    Mutation(
        "sweep: trials scored on the spec's own split (test), not validation",
        "ftspec/plan/sweep.py",
        "        return [*self.sets, *own, *([VALIDATION] if validation else [])]",
        "        return [*self.sets, *own]",
        ("tests/commands/test_sweep.py::test_a_2x2_grid_shares_data_and_base_eval_and_a_killed_sweep_trains_only_the_rest",)),
    Mutation(
        "mixture: the base evaluation keyed by all of prepare_data (a weight change re-runs it)",
        "ftspec/catalog/steps.py",
        "    if (body.get(\"eval\") or {}).get(\"few_shot\") or tiny_bpe:",
        "    if True:",
        ("tests/plan/test_mixture_plan.py::test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation",)),
    Mutation(
        "shared store: fetched bytes not checked against the manifest",
        "ftspec/store/remote.py",
        '            if dest.stat().st_size != info["size"] or sha256_file(dest) != info["sha256"]:',
        "            if False:",
        ("tests/store/test_remote.py::test_changed_bytes_are_refused_and_nothing_is_kept",)),
    Mutation(
        "shared store: the manifest put without its condition (a racing upload replaces the entry)",
        "ftspec/backends/remote_s3.py",
        '                       Body=data, IfNoneMatch="*")',
        "                       Body=data)",
        ("tests/store/test_remote.py::test_racing_uploads_leave_one_entry_and_no_stray_files[s3]",)),
    Mutation(
        "whole-save check not called by the launcher",
        "ftspec/runtime/distributed/launcher.py",
        "    verify_saved(job)\n    return TrainResult(**result)",
        "    return TrainResult(**result)",
        (DIST + "test_ctrl_c_stops_every_worker_at_the_same_step_after_a_checkpoint",)),
    Mutation(
        "weights digest blind to order (the values hashed sorted)",
        "ftspec/runtime/distributed/ranks.py",
        "        h.update(flat.view(torch.uint8).numpy())",
        "        h.update(flat.sort().values.view(torch.uint8).numpy())",
        (DIST + "test_the_weights_digest_sees_values_moved_to_other_places",
         DIST + "test_the_saved_model_is_checked_whole_against_the_trained_weights")),
    Mutation(
        "field proofs checker no longer reads the named test",
        "tests/test_field_proofs.py",
        "                texts[node] = reached_text(*node.split(\"::\", 1))",
        "                texts[node] = node + \" \" + leaf(field)",
        (PROOFS + "test_a_proof_that_never_mentions_its_field_is_refused",)),
    Mutation(
        "bedrock job record written with the secret key in it",
        "ftspec/backends/bedrock/steps.py",
        RECORD_WRITE,
        RECORD_WRITE + '        write_json(record_file, {**read_json(record_file, dict),'
        ' "k": __import__("os").environ["AWS_SECRET_ACCESS_KEY"]})\n',
        (BEDROCK_RUN + "test_no_credential_reaches_any_file_the_run_writes",)),
    Mutation(
        "bedrock manifest written with the secret key in it",
        "ftspec/backends/bedrock/__init__.py",
        "    made = read_json(run_dir / steps.folder(steps.TRAIN.name) / MODEL, lenient=True)\n",
        "    made = read_json(run_dir / steps.folder(steps.TRAIN.name) / MODEL, lenient=True)\n"
        '    made = {**made, "k": __import__("os").environ["AWS_SECRET_ACCESS_KEY"]}\n',
        (BEDROCK_RUN + "test_no_credential_reaches_any_file_the_run_writes",)),
    Mutation(
        "bedrock: a failed job no longer counts as ended (no attempt 2)",
        "ftspec/backends/bedrock/steps.py",
        'ENDED = ("Failed", "Stopped")',
        'ENDED = ("Stopped",)',
        (BEDROCK_RUN + "test_a_failed_job_counts_as_ended_and_the_next_run_starts_attempt_2",)),
]


def _copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)


def _mutated(tree: Path, m: Mutation) -> str:
    """The text of the mutated file under ``tree``; exits when the text to replace is not there exactly once."""
    path = tree / m.file
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    found = text.count(m.old)
    if found != 1:
        raise SystemExit(f"mutations: {m.name!r}: the text to replace is found {found} times in {m.file} "
                         "(exactly once expected): the mutation has rotted; update its row in bench/mutations.py")
    return text.replace(m.old, m.new)


def _apply(tree: Path, m: Mutation) -> None:
    (tree / m.file).write_text(_mutated(tree, m), encoding="utf-8")


def _run(tree: Path, m: Mutation) -> tuple[bool, str]:
    """Whether every named test fails on the mutated copy, and pytest's last lines."""
    # The copy's ftspec comes first on the path, ahead of the installed (editable) one.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    failed_all = True
    tails = []
    for node in m.tests:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-x", "-p", "no:cacheprovider",
                              "-p", "no:randomly", node], cwd=tree, env=env, capture_output=True, text=True,
                             timeout=600)
        text = out.stdout + out.stderr
        collected = "no tests ran" not in text and "not found" not in text and "ERROR: " not in text
        if not collected:
            raise SystemExit(f"mutations: {m.name!r}: {node} did not run:\n{text[-2000:]}")
        tails.append(text.strip().splitlines()[-1] if text.strip() else "")
        failed_all = failed_all and out.returncode == 1
    return failed_all, " | ".join(tails)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    chosen = [m for m in MUTATIONS if not argv or any(a in m.name for a in argv)]
    if quick:  # the checkout is only read: every row's text is still there, exactly once
        say_quick(True)
        width = max((len(m.name) for m in chosen), default=10)
        print(f"{'mutation':<{width}}  tests  result")
        for m in chosen:
            _mutated(ROOT, m)
            for node in m.tests:  # and every named test is still there
                file, _, name = node.partition("::")
                where = ROOT / file
                if not where.is_file() or f"def {name.split('[')[0]}(" not in where.read_text(encoding="utf-8"):
                    raise SystemExit(f"mutations: {m.name!r}: no test {node}: update its row in bench/mutations.py")
            print(f"{m.name:<{width}}  {len(m.tests):>5}  applies once (tests not run)")
        return 0
    rows = []
    for m in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ftspec-mutation-") as tmp:
            tree = Path(tmp)
            _copy(tree)
            _apply(tree, m)
            killed, tail = _run(tree, m)
        rows.append((m.name, len(m.tests), "killed" if killed else "SURVIVED", time.monotonic() - started, tail))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"{'mutation':<{width}}  tests  result    seconds")
    for name, n, result, seconds, tail in rows:
        print(f"{name:<{width}}  {n:>5}  {result:<8}  {seconds:7.1f}")
        if result == "SURVIVED":
            print(f"    the named tests passed with the feature broken: {tail}")
    survived = [r for r in rows if r[2] == "SURVIVED"]
    if survived:
        print(f"{len(survived)} mutation(s) survived: the claims above are not tested", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
