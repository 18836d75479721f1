#!/bin/bash
# Written by `ftspec launch-script --slurm`; regenerate it rather than editing it.
#   spec      specs/routing-lora.yaml
#   profiles  (none)
#   --set     compute.num_nodes=2 compute.num_processes=4 compute.strategy=ddp
#   plan      ffae5b932454
#   starts    8 training processes: 2 nodes x 4 processes per node (one GPU each), strategy ddp
# Submit it from the directory the spec's path above is relative to: sbatch FILE
#SBATCH --job-name=routing-lora
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4

set -euo pipefail

# The nodes meet at the first node of the allocation (SLURM's node 0), on a port
# derived from the job id (29500 + job id % 10000) unless MASTER_PORT is set; each
# node's rank is SLURM_NODEID (ftspec reads it when NODE_RANK is not set).
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="${MASTER_PORT:-$(( 29500 + SLURM_JOB_ID % 10000 ))}"
export MASTER_ADDR MASTER_PORT

# One `ftspec run` per node; it starts the node's processes itself. If one node
# fails, srun stops the others instead of leaving them waiting for it.
srun --kill-on-bad-exit=1 ftspec run specs/routing-lora.yaml --set compute.num_nodes=2 --set compute.num_processes=4 --set compute.strategy=ddp
