#!/usr/bin/env bash
# Install the cryomtd clone into the active conda environment (no dependencies: the
# environment file provides them). Called by each envs/<name>.post-deploy.sh, which
# Snakemake runs inside the new environment, from the workflow's working directory.
# The clone is $CRYOMTD_SOURCE (workflow/rules/common.smk sets it to the Snakefile's
# folder), else the working directory when it holds the project.
set -euo pipefail
src="${CRYOMTD_SOURCE:-$PWD}"
if [ ! -f "$src/pyproject.toml" ] || ! grep -q '^name = "cryomtd"' "$src/pyproject.toml"; then
    echo "install-cryomtd: no cryomtd clone at '$src' (set CRYOMTD_SOURCE to the clone)" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --disable-pip-version-check -e "$src"
