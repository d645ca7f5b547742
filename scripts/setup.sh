#!/usr/bin/env bash
# One-shot set-up on a new Debian 12 machine (as root, or with sudo available):
# system packages, a project virtual environment in .venv/, and stac2cube with
# all extras, pinned by constraints.txt. Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# netcdf-bin: ncdump for the NetCDF export test; chromium + chromium-driver: the Prefect UI check
APT_PKGS=(libgdal-dev gdal-bin postgresql-15-postgis-3 slurmctld slurmd slurm-client munge curl
          netcdf-bin chromium chromium-driver)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
# -q: no progress lines, but pip's (and the build backend's) warnings and errors still print; the
# package itself builds without a warning (tests/test_packaging.py), so anything shown is news.
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt")
stamp="$VENV/.stac2cube-setup-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then log "environment up to date ($VENV)"; exit 0; fi

log "pip: build tools and CPU torch first"
"${PIP[@]}" --upgrade pip setuptools wheel numpy
"${PIP[@]}" torch
if ! "$VENV/bin/python" -c "from osgeo import gdal_array" 2>/dev/null; then
  log "pip: GDAL $(gdal-config --version) Python bindings (compiled against the system library)"
  "${PIP[@]}" --no-build-isolation "gdal==$(gdal-config --version)"
fi
log "pip: stac2cube with all extras"
# setuptools notes every editable install with a mapped layout ("Editable installation. Please be
# careful with folders ..."): informational, so that message alone is silenced
PYTHONWARNINGS="ignore:Editable installation" "${PIP[@]}" -e ".[all,test]"
rm -f "$VENV"/.stac2cube-setup-*
touch "$stamp"
log "done: $("$VENV/bin/stac2cube" --version)"
