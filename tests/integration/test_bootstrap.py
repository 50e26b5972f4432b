"""scripts/bootstrap with one shared cache and several checkouts.

Two checkouts bootstrapped one after the other both still run their own code
and tests (each has its own thin venv; the shared deps venv holds no
checkout's code), a venv somebody holds is never pruned, and what nobody can
be using is.

Runs against the suite's own $RPGER_CACHE_DIR, so the deps venv is warm; the
checkouts are copies of this one (tracked and new files, as they are now).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RPGER_CACHE_DIR", Path.home() / ".cache" / "rpger-dbstack"))


def _clean_env() -> dict[str, str]:
    """A fresh login-like environment: no venv active."""
    venv = os.environ.get("VIRTUAL_ENV")
    path = [p for p in os.environ["PATH"].split(os.pathsep)
            if p and not (venv and p.startswith(venv)) and not p.startswith(str(Path(sys.executable).parent))]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "RPGER_CHECKOUT_STATE", "RPGER_DEPS_LOCK_FD", "RPGER_VENV_LOCK_FD",
                        "PYTHONPATH")}
    env.update(PATH=os.pathsep.join(path), RPGER_CACHE_DIR=str(CACHE))
    return env


def _copy_checkout(dst: Path, marker: str) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    with open(dst / "rpger_ops" / "__init__.py", "a") as fh:
        fh.write(f'\nCHECKOUT = "{marker}"\n')
    with open(dst / "client" / "src" / "rpger_stack_client" / "__init__.py", "a") as fh:
        fh.write(f'\nCHECKOUT = "{marker}"\n')
    return dst


def _bash(checkout: Path, script: str, timeout: float = 300) -> str:
    p = subprocess.run(["bash", "-c", f"set -euo pipefail\n. scripts/bootstrap >/dev/null\n{script}"],
                       cwd=checkout, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"in {checkout}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


WHO = ('python -c "import rpger_ops, rpger_stack_client as c; '
       'print(rpger_ops.CHECKOUT, c.CHECKOUT, rpger_ops.__file__, c.__file__)"; echo "venv=$VIRTUAL_ENV"')
TESTS = "python -m pytest -q -p no:cacheprovider tests/unit/test_retention.py tests/unit/test_clients_reexport.py"


def _venv(out: str) -> Path:
    return Path(next(line for line in out.splitlines() if line.startswith("venv="))[5:])


def _pyver() -> str:
    return subprocess.run(["python3", "-c", "import sys; print('%d%d' % sys.version_info[:2])"], env=_clean_env(),
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkouts(tmp_path: Path):  # type: ignore[no-untyped-def]
    a = _copy_checkout(tmp_path / "checkout-a", "a")
    b = _copy_checkout(tmp_path / "checkout-b", "b")
    yield a, b
    # Their records in the shared cache (the next bootstrap would prune them anyway).
    for st in (CACHE / "checkouts").glob("checkout-[ab]-*"):
        if (st / "checkout").read_text().strip() in (str(a), str(b)):
            shutil.rmtree(st, ignore_errors=True)


def test_two_checkouts_keep_their_own_code(checkouts: tuple[Path, Path]) -> None:
    a, b = checkouts
    t0 = time.monotonic()
    out_a = _bash(a, WHO)
    out_b = _bash(b, WHO)
    venv_a, venv_b = _venv(out_a), _venv(out_b)
    assert venv_a != venv_b
    assert out_a.split()[:2] == ["a", "a"] and str(a) in out_a.split()[2] and str(a) in out_a.split()[3]
    assert out_b.split()[:2] == ["b", "b"] and str(b) in out_b.split()[2] and str(b) in out_b.split()[3]

    # A's environment after B's bootstrap, without bootstrapping A again (an
    # open shell, a running `rpger-ops dev`): still A's code, A's tests pass.
    env = _clean_env()
    env["PATH"] = f"{venv_a}/bin:{env['PATH']}"
    p = subprocess.run(["bash", "-c", f"{WHO} && {TESTS} && rpger-ops --help >/dev/null"], cwd=a, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.split()[:2] == ["a", "a"], p.stdout
    # And B runs its tests with its code.
    out = _bash(b, f"{WHO} && {TESTS}")
    assert out.split()[:2] == ["b", "b"]
    # The shared deps venv holds nobody's code.
    deps = Path((venv_a.parent / f"deps-{_pyver()}").read_text().strip())
    assert deps == Path((venv_b.parent / f"deps-{_pyver()}").read_text().strip())
    leaked = [p.name for p in deps.glob("lib/python*/site-packages/*")
              if p.name.startswith(("rpger_ops", "rpger_stack_client", "__editable__", "rpger-"))]
    assert leaked == [], leaked
    print(f"\ntwo checkouts bootstrapped and tested in {time.monotonic() - t0:.1f}s")


def test_pruning_spares_what_may_be_in_use(checkouts: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = checkouts
    _bash(a, "true")
    pyver = _pyver()
    locks = CACHE / "locks"
    held, unheld, referenced = (CACHE / f"deps-{pyver}-test{n}held0" for n in ("h", "u", "r"))
    for d in (held, unheld, referenced):
        d.mkdir()
        (d / ".complete").touch()
    gone = CACHE / "checkouts" / "gone-checkout-000000000000"
    gone.mkdir()
    (gone / "checkout").write_text(str(tmp_path / "no-such-checkout") + "\n")
    # Checkout A's record names `referenced` (as if A had last bootstrapped
    # with an older pyproject): kept though nobody holds it now.
    state_a = next(st for st in (CACHE / "checkouts").glob("checkout-a-*")
                   if (st / "checkout").read_text().strip() == str(a))
    (state_a / "client-test-ref").write_text(f"{referenced}\n")
    holder = open(locks / f"{held.name}.lock", "a")  # noqa: SIM115 - as a sourcing shell holds it
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        _bash(a, "true")
        assert held.exists(), "a venv whose lock is held was deleted"
        assert referenced.exists(), "a venv a living checkout records was deleted"
        assert not unheld.exists(), "an unused venv was kept"
        assert not gone.exists(), "the record of a deleted checkout was kept"
    finally:
        holder.close()
    (state_a / "client-test-ref").unlink()
    _bash(a, "true")
    assert not held.exists() and not referenced.exists()
