"""Several machines: where the nodes meet (ftspec.runtime.distributed.rendezvous) and `ftspec launch-script`."""

import os
import shutil
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import HEAVY, PROBE

from ftspec.cli import main
from ftspec.commands.launch_scripts import slurm_script
from ftspec.runtime.distributed.rendezvous import (
    Rendezvous,
    RendezvousError,
    expand_hostlist,
    resolve,
)


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- resolve


def test_one_node_is_local_whatever_the_environment_says():
    stale = {"MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "1234", "NODE_RANK": "1",
             "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "7"}
    assert resolve(1, stale) == Rendezvous("127.0.0.1", 0, 0, 1, "local")
    assert resolve(1, {}) == Rendezvous("127.0.0.1", 0, 0, 1, "local")


def test_environment_variables():
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29600", "NODE_RANK": "1"}
    assert resolve(2, env) == Rendezvous("10.0.0.5", 29600, 1, 2, "environment")
    # They win over SLURM's own variables when both are there.
    env.update({"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NODEID": "0", "SLURM_NNODES": "2", "SLURM_JOB_ID": "9"})
    assert resolve(2, env) == Rendezvous("10.0.0.5", 29600, 1, 2, "environment")


def test_environment_inside_slurm_takes_rank_and_port_from_slurm():
    # What the script `ftspec launch-script --slurm` writes gives each node: MASTER_ADDR
    # (and MASTER_PORT) exported, the rank left to srun's SLURM_NODEID.
    env = {"MASTER_ADDR": "gpu01", "SLURM_JOB_ID": "123456", "SLURM_NODEID": "1", "SLURM_NNODES": "2"}
    assert resolve(2, env) == Rendezvous("gpu01", 29500 + 3456, 1, 2, "environment")
    with pytest.raises(RendezvousError, match="the spec asks for 3 nodes; SLURM allocated 2"):
        resolve(3, env)


@pytest.mark.parametrize("env,needle", [
    ({"MASTER_ADDR": "10.0.0.5", "NODE_RANK": "0"}, "MASTER_PORT is not: set MASTER_PORT"),
    ({"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}, "NODE_RANK is not: set NODE_RANK on each node"),
    ({"MASTER_ADDR": "", "MASTER_PORT": "29500", "NODE_RANK": "0"}, "MASTER_ADDR in the environment is empty"),
    ({"MASTER_ADDR": "a host", "MASTER_PORT": "29500", "NODE_RANK": "0"}, "is not an address"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "0", "NODE_RANK": "0"},
     "MASTER_PORT in the environment is '0': set it to a port number from 1 to 65535"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "65536", "NODE_RANK": "0"}, "from 1 to 65535"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "http", "NODE_RANK": "0"}, "from 1 to 65535"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "29500", "NODE_RANK": "2"},
     "NODE_RANK in the environment is '2': a node rank is an integer from 0 (the master) to 1"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "29500", "NODE_RANK": "-1"}, "NODE_RANK in the environment is '-1'"),
    ({"MASTER_ADDR": "h", "MASTER_PORT": "29500", "NODE_RANK": "one"}, "NODE_RANK in the environment is 'one'"),
    ({}, "set MASTER_ADDR, MASTER_PORT and NODE_RANK on each node, or run inside a SLURM job"),
    ({"SLURM_JOB_NODELIST": "gpu[01-03]", "SLURM_NODEID": "0", "SLURM_NNODES": "3", "SLURM_JOB_ID": "5"},
     "the spec asks for 2 nodes; SLURM allocated 3"),
    ({"SLURM_JOB_NODELIST": "gpu[01-", "SLURM_NODEID": "0", "SLURM_NNODES": "2", "SLURM_JOB_ID": "5"},
     "SLURM_JOB_NODELIST 'gpu[01-': a '[' without its ']'; set MASTER_ADDR"),
    ({"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "5"}, "SLURM_NODEID is not set"),
    ({"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NODEID": "2", "SLURM_NNODES": "2", "SLURM_JOB_ID": "5"},
     "SLURM_NODEID (SLURM's node rank) is '2'"),
    ({"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NODEID": "0", "SLURM_NNODES": "2", "SLURM_JOB_ID": "x"},
     "SLURM_JOB_ID 'x' is not a number"),
    ({"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NODEID": "0", "SLURM_NNODES": "2", "SLURM_JOB_ID": "5",
      "MASTER_PORT": "99999"}, "MASTER_PORT in the environment is '99999'"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_errors_say_what_to_set(env, needle):
    with pytest.raises(RendezvousError) as info:
        resolve(2, env)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_slurm_variables():
    env = {"SLURM_JOB_NODELIST": "gpu[01-04,07]", "SLURM_NODEID": "3", "SLURM_NNODES": "5", "SLURM_JOB_ID": "123456"}
    assert resolve(5, env) == Rendezvous("gpu01", 29500 + 123456 % 10000, 3, 5, "SLURM")
    # MASTER_PORT set in the job's environment wins over the default.
    assert resolve(5, {**env, "MASTER_PORT": "40000"}).port == 40000
    # Two jobs on one cluster get different default ports.
    assert resolve(5, {**env, "SLURM_JOB_ID": "123457"}).port == 29500 + 3457


@pytest.mark.parametrize("text,hosts", [
    ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
    ("a,b", ["a", "b"]),
    ("n[1-2],m3", ["n1", "n2", "m3"]),
    ("node7", ["node7"]),
    ("n[008-011]", ["n008", "n009", "n010", "n011"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("gpu-a[3,1],gpu-b10", ["gpu-a3", "gpu-a1", "gpu-b10"]),
])
def test_slurm_host_lists(text, hosts):
    assert expand_hostlist(text) == hosts
    env = {"SLURM_JOB_NODELIST": text, "SLURM_NODEID": "0", "SLURM_NNODES": str(len(hosts)), "SLURM_JOB_ID": "1"}
    if len(hosts) > 1:
        assert resolve(len(hosts), env).addr == hosts[0]


@pytest.mark.parametrize("text", ["", "a,,b", "n[1-", "n1]", "n[3-1]", "n[a-b]", "n[1-2", "n[[1]]", "n[0-999999]"])
def test_bad_host_lists(text):
    with pytest.raises(ValueError):
        expand_hostlist(text)


# --------------------------------------------------------------------------- launch-script

TWO_NODES = ["--set", "compute.num_nodes=2", "--set", "compute.num_processes=2", "--set", "compute.strategy=ddp"]


def test_launch_script_shape(in_root):
    result = invoke("launch-script", "specs/quickstart.yaml", "--slurm", "--profile", "smoke", *TWO_NODES)
    assert result.exit_code == 0, result.output
    text = result.stdout
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=quickstart" in lines
    assert "#SBATCH --nodes=2" in lines
    assert "#SBATCH --ntasks-per-node=1" in lines
    assert not any(l.startswith("#SBATCH --gpus") for l in lines)  # the spec trains on the CPU
    assert "#   starts    4 training processes: 2 nodes x 2 processes per node (on the CPU), strategy ddp" in lines
    plan = invoke("plan", "specs/quickstart.yaml", "--profile", "smoke", *TWO_NODES, "--json").stdout
    import json

    assert f"#   plan      {json.loads(plan)['id'][:12]}" in lines
    assert "set -euo pipefail" in lines
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in lines
    assert 'MASTER_PORT="${MASTER_PORT:-$(( 29500 + SLURM_JOB_ID % 10000 ))}"' in lines
    assert lines[-1] == ("srun --kill-on-bad-exit=1 ftspec run specs/quickstart.yaml --profile smoke "
                         "--set compute.num_nodes=2 --set compute.num_processes=2 --set compute.strategy=ddp")
    # Every #SBATCH line comes before the first command (sbatch stops reading them there).
    first_command = next(i for i, l in enumerate(lines) if l and not l.startswith("#"))
    assert max(i for i, l in enumerate(lines) if l.startswith("#SBATCH")) < first_command


def test_launch_script_asks_for_gpus_unless_the_device_is_cpu(in_root):
    result = invoke("launch-script", "specs/quickstart.yaml", "--slurm", *TWO_NODES, "--set", "compute.device=cuda")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --gpus-per-node=2" in result.stdout.splitlines()
    # One node, one process is a valid job too; the header says what it starts.
    one = invoke("launch-script", "specs/quickstart.yaml", "--slurm").stdout
    assert "#SBATCH --nodes=1" in one.splitlines()
    assert "#   starts    1 training process: 1 node x 1 process per node (on the CPU), strategy none" in one


def test_launch_script_without_slurm_says_what_to_do(in_root):
    result = invoke("launch-script", "specs/quickstart.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "ftspec: launch-script writes SLURM scripts only (--slurm); for other clusters set MASTER_ADDR, MASTER_PORT "
        "and NODE_RANK and run `ftspec run specs/quickstart.yaml` on each node")
    assert result.stdout == ""


def test_launch_script_reports_spec_errors_in_one_line(in_root):
    result = invoke("launch-script", "specs/quickstart.yaml", "--slurm", "--set", "compute.num_nodes=0")
    assert result.exit_code == 2
    assert "compute.num_nodes" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


HOSTILE_PROFILE = "x'; touch pwned-profile; echo '"
PROFILE = "two-steps_1.0"  # every kind of character a profile name may hold


def test_hostile_values_cannot_run_commands(tmp_path):
    # A spec in a repository of its own. A profile whose name is shell code is refused at its
    # line (a profile's name becomes part of file names); a --set value that is shell code
    # reaches the generated script, which is run with stand-ins for srun and scontrol, which
    # print the arguments they were given.
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "specs", repo / "specs")
    (repo / ".git").mkdir()
    spec = repo / "specs" / "quickstart.yaml"
    text = spec.read_text(encoding="utf-8")
    from conftest import run_cli

    spec.write_text(text + f"  \"{HOSTILE_PROFILE}\":\n    training: {{max_steps: 2}}\n", encoding="utf-8")
    refused = run_cli(["launch-script", "specs/quickstart.yaml", "--slurm", *TWO_NODES, "-o", str(tmp_path / "x.sh")],
                      cwd=repo)
    assert refused.returncode == 2 and "cannot be a profile name" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x.sh").exists()

    spec.write_text(text + f"  {PROFILE}:\n    training: {{max_steps: 2}}\n", encoding="utf-8")
    hostile_set = "description=$(touch pwned-set) `touch pwned-tick` \"; touch pwned-quote; \n touch pwned-line"
    args = ["launch-script", "specs/quickstart.yaml", "--slurm", "-p", PROFILE, "--set", hostile_set,
            *TWO_NODES, "-o", str(tmp_path / "job.sh")]
    made = run_cli(args, cwd=repo)
    assert made.returncode == 0, made.stderr
    script = (tmp_path / "job.sh").read_text(encoding="utf-8")
    # The header comments stay comments: no line break gets through.
    header = script.split("set -euo pipefail")[0]
    assert all(l.startswith("#") or not l for l in header.splitlines())

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu01\\ngpu02\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "4321"}
    out = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=work, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in work.iterdir()) == []  # nothing was touched
    import json

    argv = json.loads(out.stdout.strip().splitlines()[-1])
    assert argv == ["--kill-on-bad-exit=1", "ftspec", "run", "specs/quickstart.yaml", "--profile", PROFILE,
                    "--set", hostile_set, "--set", "compute.num_nodes=2", "--set", "compute.num_processes=2",
                    "--set", "compute.strategy=ddp"]


def test_script_exports_the_rendezvous_resolve_reads(tmp_path):
    # The script's MASTER_ADDR and MASTER_PORT, with srun's SLURM_NODEID, are what resolve()
    # turns into the same rendezvous on every node.
    text = slurm_script(name="n", plan_id="p", spec="s.yaml", nodes=2, processes_per_node=1, device="cpu",
                        strategy="ddp")
    body = text.replace("srun --kill-on-bad-exit=1", "env -0 #")
    body = body.replace("$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)", "gpu07")
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "98765", "SLURM_NODEID": "1",
           "SLURM_NNODES": "2"}
    out = subprocess.run(["bash", "-c", body], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    seen = dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)
    assert resolve(2, seen) == Rendezvous("gpu07", 29500 + 8765, 1, 2, "environment")


def test_output_file_is_executable_and_written_whole(in_root, tmp_path):
    target = tmp_path / "job.sh"
    result = invoke("launch-script", "specs/quickstart.yaml", "--slurm", *TWO_NODES, "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"wrote {target}" in result.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 & ~mask
    assert target.stat().st_mode & stat.S_IXUSR
    assert target.read_text(encoding="utf-8") == invoke("launch-script", "specs/quickstart.yaml", "--slurm",
                                                        *TWO_NODES).stdout
    assert [p.name for p in tmp_path.iterdir()] == ["job.sh"]  # no temporary file left

    folder = tmp_path / "folder"
    folder.mkdir()
    bad = invoke("launch-script", "specs/quickstart.yaml", "--slurm", "-o", str(folder))
    assert bad.exit_code == 2
    assert f"{folder}: --output: is a directory" in bad.stderr and "Traceback" not in bad.output


def test_launch_script_does_not_import_the_training_stack():
    args = ["launch-script", "specs/quickstart.yaml", "--slurm", *TWO_NODES]
    code = PROBE.format(args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --nodes=2" in out.stdout
    line = [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")][-1]
    assert line == "HEAVY:", f"launch-script imported {line[6:]}"


# --------------------------------------------------------------------------- the example

EXAMPLE = ROOT / "examples" / "slurm" / "routing-lora-2x4.sh"
EXAMPLE_ARGS = ["launch-script", "specs/routing-lora.yaml", "--slurm", "--set", "compute.num_nodes=2",
                "--set", "compute.num_processes=4", "--set", "compute.strategy=ddp"]


def test_slurm_example_is_what_the_command_writes(in_root, update_golden):
    result = invoke(*EXAMPLE_ARGS)
    assert result.exit_code == 0, result.output
    if update_golden:
        EXAMPLE.write_text(result.stdout, encoding="utf-8")
        EXAMPLE.chmod(0o755)
    assert EXAMPLE.exists(), f"no {EXAMPLE.name}; run pytest --update-golden and review it"
    assert EXAMPLE.read_text(encoding="utf-8") == result.stdout, (
        f"{EXAMPLE.relative_to(ROOT)} is not what `ftspec {' '.join(EXAMPLE_ARGS)}` writes; "
        "review, then pytest --update-golden")
    readme = (EXAMPLE.parent / "README.md").read_text(encoding="utf-8")
    assert " ".join(EXAMPLE_ARGS) in readme  # the README shows the command that wrote it


def test_script_passes_allow_paths_and_quotes_the_spec_path():
    text = slurm_script(name="real sft", plan_id="abc", spec="specs/my spec.yaml", profiles=["smoke"],
                        sets=["training.seed=3", "description=a b"], allow=["../shared"], nodes=2,
                        processes_per_node=1, device="auto", strategy="ddp")
    lines = text.splitlines()
    assert lines[-1] == ("srun --kill-on-bad-exit=1 ftspec run 'specs/my spec.yaml' --profile smoke "
                         "--set training.seed=3 --set 'description=a b' --allow-path ../shared")
    assert "#   --set     training.seed=3 'description=a b'" in lines
    assert "#SBATCH --job-name=real_sft" in lines  # sbatch reads the rest of the line as the name
    assert "#SBATCH --gpus-per-node=1" in lines
