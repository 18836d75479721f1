"""Where the processes of a run on several machines meet: the rendezvous.

A spec holds no addresses. On each node, `ftspec run SPEC` reads them from the
environment it was started in:

1. ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` (the names torch's launchers
   use), when ``MASTER_ADDR`` is set; inside a SLURM job ``NODE_RANK`` may be left
   out (``SLURM_NODEID`` is the node's rank) and so may ``MASTER_PORT`` (the default
   below);
2. else SLURM's own variables: the first host of ``SLURM_JOB_NODELIST`` is the
   master, ``SLURM_NODEID`` the node's rank, ``SLURM_NNODES`` must be the spec's
   ``compute.num_nodes``;
3. else a :class:`RendezvousError` saying what to set.

**The default port** inside SLURM is ``29500 + SLURM_JOB_ID % 10000``: every node of
one job computes the same number without talking to the others, and two jobs that
share a node (or a master) rarely pick the same port, as they would with a fixed
29500. ``MASTER_PORT`` in the environment overrides it.

Pure python, no torch: the executor calls :func:`spec_rendezvous` before anything heavy
is imported, and `ftspec launch-script` (ftspec.commands.launch_scripts) writes scripts
that follow the same rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ftspec.core.errors import Pos, SpecError

__all__ = ["DEFAULT_PORT_BASE", "PORT_SPREAD", "Rendezvous", "RendezvousError", "default_port", "expand_hostlist",
           "first_host", "resolve", "spec_rendezvous"]

DEFAULT_PORT_BASE = 29500
PORT_SPREAD = 10000  # the default port is DEFAULT_PORT_BASE + SLURM_JOB_ID % PORT_SPREAD

# Expanding a host list is for finding its first host and counting it: a list that
# names more hosts than this is refused rather than expanded without end.
MAX_HOSTS = 100_000


@dataclass(frozen=True)
class Rendezvous:
    """Where this node's processes meet the others'."""

    addr: str  # the master node's address
    port: int  # 0: pick a free port (one node only)
    node_rank: int
    nodes: int
    source: str  # "local" | "environment" | "SLURM": how it was found, for the run header


class RendezvousError(ValueError):
    """The environment does not say where the nodes meet, or says it wrongly: one line,
    naming the variable to set and where."""


def resolve(nodes: int, environ: Mapping[str, str] | None = None) -> Rendezvous:
    """The rendezvous of a run on ``nodes`` machines, read from ``environ`` (default:
    ``os.environ``). Raises :class:`RendezvousError` (one line) when it cannot be found."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a positive integer (got {nodes!r})")
    if nodes == 1:
        # One machine: the processes meet on the loopback address, whatever the
        # environment says. A MASTER_ADDR left in a shell from another job must not
        # send a one-node run to another machine (or make it wait there for peers).
        return Rendezvous("127.0.0.1", 0, 0, 1, "local")
    if environ is None:
        environ = os.environ
    in_slurm = "SLURM_JOB_ID" in environ
    if "MASTER_ADDR" in environ:
        addr = _address(environ["MASTER_ADDR"], "MASTER_ADDR in the environment")
        if "MASTER_PORT" in environ:
            port = _port(environ["MASTER_PORT"], "MASTER_PORT in the environment")
        elif in_slurm:
            port = _slurm_port(environ)
        else:
            raise RendezvousError(f"MASTER_ADDR is set ({addr}) but MASTER_PORT is not: set MASTER_PORT to the same "
                                  "free port (1-65535) on every node")
        if "NODE_RANK" in environ:
            rank = _rank(environ["NODE_RANK"], nodes, "NODE_RANK in the environment")
        elif "SLURM_NODEID" in environ:
            _check_slurm_nodes(environ, nodes)
            rank = _rank(environ["SLURM_NODEID"], nodes, "SLURM_NODEID (SLURM's node rank)")
        else:
            raise RendezvousError(f"MASTER_ADDR is set ({addr}) but NODE_RANK is not: set NODE_RANK on each node "
                                  f"(0 on the master, then 1 to {nodes - 1})")
        return Rendezvous(addr, port, rank, nodes, "environment")
    if "SLURM_JOB_NODELIST" in environ or "SLURM_NODELIST" in environ:
        hosts_var = "SLURM_JOB_NODELIST" if "SLURM_JOB_NODELIST" in environ else "SLURM_NODELIST"
        _check_slurm_nodes(environ, nodes)
        try:
            first = first_host(environ[hosts_var])
        except ValueError as exc:
            raise RendezvousError(f"{hosts_var} {environ[hosts_var]!r}: {exc}; set MASTER_ADDR to the first node's "
                                  "address instead") from None
        addr = _address(first, f"the first host of {hosts_var}")
        if "SLURM_NODEID" not in environ:
            raise RendezvousError("SLURM_NODEID is not set: start `ftspec run` on each node with srun (one task per "
                                  "node), or set NODE_RANK with MASTER_ADDR and MASTER_PORT")
        rank = _rank(environ["SLURM_NODEID"], nodes, "SLURM_NODEID (SLURM's node rank)")
        port = _port(environ["MASTER_PORT"], "MASTER_PORT in the environment") if "MASTER_PORT" in environ \
            else _slurm_port(environ)
        return Rendezvous(addr, port, rank, nodes, "SLURM")
    raise RendezvousError(f"the spec asks for {nodes} nodes (compute.num_nodes) but the environment does not say where "
                          "they meet: set MASTER_ADDR, MASTER_PORT and NODE_RANK on each node, or run inside a SLURM "
                          "job (`ftspec launch-script SPEC --slurm` writes one)")


def spec_rendezvous(nodes: int) -> Rendezvous:
    """:func:`resolve` from this process's environment, its error one line at ``compute.num_nodes``."""
    try:
        return resolve(nodes)
    except RendezvousError as exc:
        raise SpecError.one(Pos("compute.num_nodes"), "compute.num_nodes", str(exc)) from None


def default_port(job_id: int) -> int:
    """The port every node of SLURM job ``job_id`` uses when MASTER_PORT is not set."""
    return DEFAULT_PORT_BASE + job_id % PORT_SPREAD


def _slurm_port(environ: Mapping[str, str]) -> int:
    raw = environ.get("SLURM_JOB_ID", "")
    try:
        job = int(raw.strip())
    except ValueError:
        raise RendezvousError(f"SLURM_JOB_ID {raw!r} is not a number, so no default port can be derived from it: "
                              "set MASTER_PORT (1-65535) on every node") from None
    if job < 0:
        raise RendezvousError(f"SLURM_JOB_ID {raw!r} is negative: set MASTER_PORT (1-65535) on every node")
    return default_port(job)


def _check_slurm_nodes(environ: Mapping[str, str], nodes: int) -> None:
    raw = environ.get("SLURM_NNODES", environ.get("SLURM_JOB_NUM_NODES"))
    if raw is None:
        return
    try:
        allocated = int(raw.strip())
    except ValueError:
        raise RendezvousError(f"SLURM_NNODES {raw!r} is not a number") from None
    if allocated != nodes:
        raise RendezvousError(f"the spec asks for {nodes} nodes; SLURM allocated {allocated}: submit with "
                              f"--nodes={nodes} (or change compute.num_nodes)")


def _address(value: str, where: str) -> str:
    addr = value.strip()
    if not addr:
        raise RendezvousError(f"{where} is empty: set it to the master node's host name or IP address")
    if any(c.isspace() for c in addr) or not addr.isprintable():
        raise RendezvousError(f"{where} {value!r} is not an address (it holds spaces or control characters): set "
                              "it to the master node's host name or IP address")
    return addr


def _integer(value: str) -> int | None:
    text = value.strip()
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,9}", text) else None


def _port(value: str, where: str) -> int:
    port = _integer(value)
    if port is None or not 1 <= port <= 65535:
        raise RendezvousError(f"{where} is {value!r}: set it to a port number from 1 to 65535, the same on every node")
    return port


def _rank(value: str, nodes: int, where: str) -> int:
    rank = _integer(value)
    if rank is None or not 0 <= rank < nodes:
        raise RendezvousError(f"{where} is {value!r}: a node rank is an integer from 0 (the master) to {nodes - 1} "
                              f"for the spec's {nodes} nodes")
    return rank


# --------------------------------------------------------------------------- SLURM host lists


def expand_hostlist(text: str, limit: int = MAX_HOSTS) -> list[str]:
    """The hosts of a SLURM host list, in order: ``gpu[01-04,07]``, ``a,b``,
    ``n[1-2],m3``, ``rack[1-2]-n[1-2]``. Zero padding of a range is kept (``01-04``
    gives 01, 02, 03, 04). Raises ValueError for a list that is not well formed."""
    hosts: list[str] = []
    for item in _split_top(text.strip()):
        if not item:
            raise ValueError("an empty host name")
        for host in _expand_one(item):
            hosts.append(host)
            if len(hosts) > limit:
                raise ValueError(f"more than {limit} hosts")
    if not hosts:
        raise ValueError("no hosts")
    return hosts


def first_host(text: str) -> str:
    """The first host of a SLURM host list (the node SLURM numbers 0)."""
    return expand_hostlist(text)[0]


def _split_top(text: str) -> list[str]:
    """Split on the commas that are outside brackets."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested brackets")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("a ']' without its '['")
        elif c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError("a '[' without its ']'")
    items.append(text[start:])
    return items


def _expand_one(item: str) -> Iterable[str]:
    """One host pattern with any number of bracket groups: their cartesian product."""
    match = re.search(r"\[([^\]]*)\]", item)
    if match is None:
        if any(c.isspace() for c in item):
            raise ValueError(f"a host name with spaces: {item!r}")
        yield item
        return
    head, tail = item[:match.start()], item[match.end():]
    for value in _expand_range(match.group(1)):
        yield from _expand_one(head + value + tail)


def _expand_range(body: str) -> list[str]:
    values: list[str] = []
    for part in body.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"[{body}] is not a list of numbers and ranges")
        if not dash:
            values.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a:
            raise ValueError(f"the range {part} runs backwards")
        if b - a >= MAX_HOSTS:
            raise ValueError(f"the range {part} is too long")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        values.extend(str(n).zfill(width) for n in range(a, b + 1))
    return values
