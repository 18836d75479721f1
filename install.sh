#!/bin/sh
# Install ftspec from this checkout into the active virtual environment, with the torch
# build this machine can use:
#
#   ./install.sh train        ftspec with its training stack
#   ./install.sh train,dev    and what the tests, the linters and the docs need
#   ./install.sh              the core only (validate, plan, diff: no torch)
#
# On Linux without an NVIDIA GPU, PyPI's torch is the CUDA build (several GB of wheels
# that cannot be used), so torch is installed first, alone, as the CPU build from
# PyTorch's CPU index; the train extra then keeps it. Where that index cannot be reached
# (a machine offline, behind a mirror) pip's own sources are used, and the last line
# says which build they gave.
#
# It installs into the virtual environment that is active (or conda's, or that of the
# python $FTSPEC_PYTHON names) and never makes one: a script cannot activate an
# environment in the shell that runs it, so `ftspec` would not be found on the next
# command. Make one first:
#   python3 -m venv .venv && . .venv/bin/activate
#
# FTSPEC_TORCH chooses the torch build instead of the GPU check: cpu (PyTorch's CPU
# build), gpu (pip's default: CUDA on Linux), keep (install no torch here: one installed
# already is kept; without one the train extra installs pip's default). Default: auto.
set -eu

TORCH_VERSION=2.13.0  # the torch CI tests with; pyproject's train extra admits it
CPU_INDEX=https://download.pytorch.org/whl/cpu

say() { printf 'install.sh: %s\n' "$*"; }
fail() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }

cd "$(dirname "$0")"
[ $# -le 1 ] || fail "one argument, the extras separated by commas (got $#: $*); e.g. ./install.sh train,dev"
extras=${1:-}

# The extras this checkout offers: the keys of [project.optional-dependencies].
known=$(awk '/^\[/ { inside = ($0 == "[project.optional-dependencies]"); next }
             inside && /^[A-Za-z0-9_-]+ *= *\[/ { sub(/ *=.*/, ""); print }' pyproject.toml | tr '\n' ' ')
case "$extras" in
    *[!A-Za-z0-9,_-]*|,*|*,|*,,*) fail "extras are names separated by commas, e.g. train,dev (got '$extras')" ;;
esac
wants_torch=no
for extra in $(printf '%s' "$extras" | tr ',' ' '); do
    case " $known" in
        *" $extra "*) ;;
        *) fail "unknown extra '$extra': pyproject.toml offers ${known% }" ;;
    esac
    if [ "$extra" = train ]; then wants_torch=yes; fi
done

if [ -n "${FTSPEC_PYTHON:-}" ]; then
    py=$FTSPEC_PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    py=$VIRTUAL_ENV/bin/python
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
    py=$CONDA_PREFIX/bin/python
else
    fail "no virtual environment is active; make one first: python3 -m venv .venv && . .venv/bin/activate"
fi
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
    || fail "$py is not Python 3.10 or later (ftspec's requires-python)"

has_nvidia_gpu() {
    [ -e /proc/driver/nvidia/version ] && return 0
    command -v nvidia-smi >/dev/null 2>&1 || return 1
    if command -v timeout >/dev/null 2>&1; then
        timeout 20 nvidia-smi -L >/dev/null 2>&1
    else
        nvidia-smi -L >/dev/null 2>&1
    fi
}

choice=${FTSPEC_TORCH:-auto}
case "$choice" in
    auto)
        if [ "$(uname -s)" != Linux ]; then
            choice=gpu  # pip's default elsewhere: the CPU build on Windows, CPU and MPS on macOS
        elif has_nvidia_gpu; then
            choice=gpu
        else
            choice=cpu
        fi ;;
    cpu|gpu|keep) ;;
    *) fail "FTSPEC_TORCH must be auto, cpu, gpu or keep (got '$choice')" ;;
esac

if [ "$wants_torch" = yes ]; then
    case "$choice" in
        cpu)
            say "no NVIDIA GPU here (or FTSPEC_TORCH=cpu): installing torch $TORCH_VERSION, the CPU build"
            # torch alone (its dependencies come with the extra below), one retry and a short
            # timeout: an unreachable PyTorch index costs seconds, and pip's other sources remain.
            "$py" -m pip install --no-deps --retries 1 --timeout 15 --extra-index-url "$CPU_INDEX" \
                "torch==$TORCH_VERSION" ;;
        gpu)
            say "installing torch $TORCH_VERSION, pip's default build (CUDA on Linux)"
            "$py" -m pip install "torch==$TORCH_VERSION" ;;
        keep) say "FTSPEC_TORCH=keep: installing no torch here" ;;
    esac
fi

"$py" -m pip install -e ".${extras:+[$extras]}"

if [ "$wants_torch" = yes ]; then
    # torch.version.cuda is None for a CPU build
    built=$("$py" -c 'import torch; v = torch.version.cuda; print(torch.__version__, f"(CUDA {v} build)" if v else "(CPU build)")') \
        || fail "torch does not import after the install"
    say "ftspec installed with torch $built; python: $py"
    if [ "$choice" = cpu ] && [ "${built#*CUDA}" != "$built" ]; then
        say "warning: this machine has no NVIDIA GPU but got a CUDA build of torch: $CPU_INDEX was not reachable" >&2
    fi
else
    say "ftspec installed; python: $py"
fi
