#!/usr/bin/env bash
# Snakemake runs this once inside the new environment (a copy, under .snakemake/conda):
# install the cryomtd clone into it. Logic in envs/install-cryomtd.sh.
set -euo pipefail
src="${CRYOMTD_SOURCE:-$PWD}"
exec bash "$src/envs/install-cryomtd.sh"
