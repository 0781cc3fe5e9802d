"""Cross-cutting: the package as users get it: the sdist and the wheel built, their metadata
checked, and the wheel installed in a fresh virtual environment, away from the source tree."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from fetcher import __version__

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "mongodb-restore-fetcher"


def _one(paths: Iterable[Path | str]) -> Path | str:
    (found,) = list(paths)
    return found


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from this tree without network access."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=out)
    return out


@pytest.mark.slow
def test_sdist_and_wheel_carry_the_name_version_and_license(dist: Path) -> None:
    wheel = Path(_one(dist.glob("*.whl")))
    sdist = Path(_one(dist.glob("*.tar.gz")))
    stem = DIST_NAME.replace("-", "_")
    assert wheel.name == f"{stem}-{__version__}-py3-none-any.whl"
    assert sdist.name == f"{stem}-{__version__}.tar.gz"
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    with zipfile.ZipFile(wheel) as zipped:
        names = zipped.namelist()
        metadata = zipped.read(str(_one(n for n in names if n.endswith(".dist-info/METADATA"))))
    text = metadata.decode()
    assert f"Name: {DIST_NAME}\n" in text
    assert f"Version: {__version__}\n" in text
    assert "License-Expression: Apache-2.0\n" in text
    assert "License-File: LICENSE\n" in text
    for requirement in ("httpx", "click", "tqdm", "certifi"):
        assert f"Requires-Dist: {requirement}" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "fetcher/py.typed" in names and "fetcher/cli/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    with tarfile.open(sdist) as tar:
        inside = {Path(n).name for n in tar.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml"} <= inside
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    wheel = Path(_one(dist.glob("*.whl")))
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The dependencies come from this environment (the suite runs offline); the package itself
    # only from the wheel. A path in a .pth file is searched after the venv's own packages and
    # its own .pth files (this tree's editable install among them) are not read.
    site = Path(_one((venv / "lib").glob("python3.*/site-packages")))
    (site / "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)

    version = _run(venv / "bin" / "fetcher", "--version", cwd=tmp_path)
    helped = _run(venv / "bin" / "fetcher", "--help", cwd=tmp_path)
    where = _run(python, "-c", "import fetcher; print(fetcher.__file__)", cwd=tmp_path)

    assert version.stdout.strip() == f"fetcher, version {__version__}"
    assert "fetch" in helped.stdout and "verify" in helped.stdout
    assert where.stdout.strip().startswith(str(site))  # the wheel's copy, not this tree's
