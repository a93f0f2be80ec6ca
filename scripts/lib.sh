# shellcheck shell=bash
# Shared by the scripts (sourced, never run): root through sudo when needed, packages from the
# distribution's registry, and the Python interpreter. The caller sets `prefix`, for its messages.
: "${prefix:=yichuang}"

# Runs a command as root: directly when root already, else through sudo.
sudo_() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "$prefix: needs root for \`$*\`: run as root, or install sudo" >&2
    return 1
  fi
}

# apt_install PACKAGE...: installs packages from Debian's registry (without recommends). sudo
# resets the environment, so the settings go through `env`; C.UTF-8 makes the PostgreSQL cluster
# that the postgresql package creates use UTF-8; DEBCONF_NOWARNINGS keeps debconf quiet without
# apt-utils.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$prefix: no apt-get here: install $* by hand (the scripts expect Debian bookworm or later)" >&2
    return 1
  fi
  echo "$prefix: installing $*"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need_python: sets $python to an interpreter of Python 3.11 or later ($PYTHON, or python3,
# installed from Debian when missing: bookworm's is 3.11).
need_python() {
  python=${PYTHON:-python3}
  if [ -z "${PYTHON:-}" ] && ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    echo "$prefix: needs Python 3.11 or later as $python (install it, or set PYTHON)" >&2
    return 1
  fi
}

# free_ports N: N distinct free TCP ports on loopback, one per line. They are chosen together,
# each socket held until all are bound, so no two are the same (ports asked for one at a time
# can be handed out twice: a run once gave the reporter the gateway's port). Needs need_python.
free_ports() {
  "$python" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# make_venv DIR: a fresh virtual environment of $python in DIR (Debian's Python keeps venv and
# ensurepip in python3-venv, installed when missing).
make_venv() {
  if ! "$python" -m venv --clear "$1" >/dev/null 2>&1; then
    apt_install python3-venv
    "$python" -m venv --clear "$1"
  fi
}
