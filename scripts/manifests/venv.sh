# Sourced by scripts/check-manifests, scripts/check-chart and scripts/generate-deploy: makes sure
# the Python venv .venv exists and holds the pinned packages of
# scripts/manifests/requirements.txt (installing Debian's python3 / python3-venv when Python
# cannot make one), then sets $venv. Run from the repository root.
venv=.venv
_requirements=scripts/manifests/requirements.txt
_stamp=$venv/.requirements.sha256

_apt_install() {
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v python3 >/dev/null 2>&1; then
  echo "== installing Debian's python3 and python3-venv"
  _apt_install python3 python3-venv
fi
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "== creating the Python venv $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    echo "== installing Debian's python3-venv ($(python3 --version) cannot make a venv without it)"
    rm -rf "$venv"
    _apt_install python3-venv
    python3 -m venv "$venv"
  fi
fi
_want=$(sha256sum "$_requirements" | cut -d' ' -f1)
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "== installing $_requirements into $venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$_requirements"
  echo "$_want" >"$_stamp"
fi
