"""Python 3.9 and newest-Python environments for the client's own test suite.

Each is a venv made by `pip install ./client[test]` in a fresh venv (the
install report is kept: what a user gets), then emptied of the client
itself so it holds no checkout's code; a run installs the checkout's client
into a temporary target directory instead. Cached under
$RPGER_CACHE_DIR/client-venvs/, keyed by the Python version and the hash of
the client's requirements (+ the constraints file): warm runs only build the
client (a few seconds).

  py39-rpger-pins   Python 3.9 with RPGer's pins (client/constraints-rpger.txt:
                    pymongo 4.6.1, redis 5.0.0, chromadb-client 1.5.9)
  py3NN-latest      the newest Python on the machine, newest allowed versions

The running session holds a shared flock on each venv it uses and records it
in $RPGER_CHECKOUT_STATE, so scripts/bootstrap of another checkout never
prunes it (see scripts/bootstrap).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "client"
CACHE = Path(os.environ.get("RPGER_CACHE_DIR", Path.home() / ".cache" / "rpger-dbstack"))
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
_held_locks: list[IO[str]] = []


class PythonNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class ClientVenv:
    name: str
    python: Path  # the venv's interpreter
    version: tuple[int, int]
    report: dict  # pip's install report of `pip install ./client[test]` into the fresh venv

    def installed(self) -> dict[str, str]:
        """{distribution name (normalised): version} that the fresh install brought."""
        return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
                for item in self.report["install"]}


def _version(python: str | Path) -> tuple[int, int]:
    out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def find_python(minor: int | None) -> Path:
    """`python3.<minor>`, or the newest CPython 3 (minor=None): pyenv's
    versions/3.X.Y, then python3.X on PATH."""
    candidates = [p for p in sorted(PYENV_ROOT.glob("versions/*/bin/python3"))
                  if re.fullmatch(r"3\.\d+\.\d+", p.parent.parent.name)]
    candidates += [Path(w) for m in range(9, 20) if (w := shutil.which(f"python3.{m}"))]
    best: tuple[tuple[int, int], Path] | None = None
    for c in candidates:
        try:
            v = _version(c)
        except (OSError, subprocess.CalledProcessError):
            continue
        if (minor is None or v == (3, minor)) and (best is None or v > best[0]):
            best = (v, c)
    if best is None:
        raise PythonNotFound(f"no python3.{minor if minor is not None else 'x'} (pyenv under {PYENV_ROOT}, or PATH)")
    return best[1]


def _key(version: tuple[int, int], constraints: Path | None) -> str:
    """What pip resolves from: the client's requirements (not the file, so a
    comment changes nothing) and the pins."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    h = hashlib.sha256(json.dumps([project["dependencies"], project["optional-dependencies"],
                                   project["requires-python"]]).encode())
    if constraints is not None:
        h.update(constraints.read_bytes())
    return h.hexdigest()[:12]


def _record_use(venv: Path) -> None:
    """Hold a shared lock for this process's lifetime; record the venv for this checkout."""
    lock_dir = CACHE / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fh = open(lock_dir / f"{venv.name}.lock", "a")  # noqa: SIM115 - held until the session ends
    fcntl.flock(fh, fcntl.LOCK_SH)
    _held_locks.append(fh)
    state = os.environ.get("RPGER_CHECKOUT_STATE")
    if state and Path(state).is_dir():
        (Path(state) / f"client-{venv.name.rsplit('-', 1)[0]}").write_text(f"{venv}\n")


_venvs: dict[tuple[Path, Path | None, str], ClientVenv] = {}


def client_venv(python: Path, constraints: Path | None, label: str) -> ClientVenv:
    """The cached venv (made on first use), held for this process's lifetime.
    Memoised: this process's own shared lock must not meet its exclusive one."""
    if (python, constraints, label) in _venvs:
        return _venvs[(python, constraints, label)]
    version = _version(python)
    venv = CACHE / "client-venvs" / f"py{version[0]}{version[1]}-{label}-{_key(version, constraints)}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    if not (venv / ".complete").exists():
        with open(CACHE / "locks" / f"{venv.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (venv / ".complete").exists():
                _create(venv, python, constraints)
    _record_use(venv)
    result = ClientVenv(venv.name, venv / "bin" / "python", version,
                        json.loads((venv / "install-report.json").read_text()))
    _venvs[(python, constraints, label)] = result
    return result


def _create(venv: Path, python: Path, constraints: Path | None) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    # Exactly what a user runs (plus the test extra), recorded.
    pins = ["-c", str(constraints)] if constraints is not None else []
    subprocess.run([*pip, "install", *pins, "--report", str(venv / "install-report.json"), f"{CLIENT}[test]"],
                   check=True)
    # The venv keeps the dependencies only (no checkout's code); runs build the
    # client afresh. setuptools/wheel for that offline build.
    subprocess.run([*pip, "uninstall", "-y", "rpger-stack-client"], check=True)
    subprocess.run([*pip, "install", "setuptools>=77", "wheel"], check=True)
    (venv / ".complete").touch()


def build_client(venv: ClientVenv, target: Path) -> Path:
    """Install this checkout's client (a real wheel build, no dependencies)
    into `target`, to be put on PYTHONPATH."""
    subprocess.run([str(venv.python), "-m", "pip", "--disable-pip-version-check", "-q", "install",
                    "--no-deps", "--no-build-isolation", "--target", str(target), str(CLIENT)],
                   check=True, capture_output=True)
    return target


def venv_env(target: Path, **extra: str) -> dict[str, str]:
    """Environment for running the client venv's Python with the built client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(target), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def pythons() -> dict[str, tuple[int | None, Path | None, str]]:
    """The client's test matrix: id -> (minor, constraints, label)."""
    return {
        "py39-rpger-pins": (9, CLIENT / "constraints-rpger.txt", "rpger-pins"),
        "newest": (None, None, "latest"),
    }


if __name__ == "__main__":  # `python tests/client_venvs.py`: build both (e.g. to warm a cache)
    for _id, (minor, constraints, label) in pythons().items():
        v = client_venv(find_python(minor), constraints, label)
        print(v.name, v.python, ".".join(map(str, v.version)))
