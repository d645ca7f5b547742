"""The package as ``pip install .`` builds it: a wheel of this checkout, not the editable install.

The tests run against the editable install, which maps the source folders; a package or a data
file left out of ``pyproject.toml`` passes them all and then is missing from a real install (the
demo's STAC templates once were at risk of this). Here a wheel of a clean copy of the checkout is
built with the environment's own setuptools (``--no-build-isolation``: no network) and its file
list is compared with the source tree; building it must print no setuptools warning. The
integration test installs the checkout, non-editable, into a fresh virtual environment and runs
``stac2cube demo`` from it.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: installed package -> source folder (the mapping of ``[tool.setuptools] package-dir``)
SOURCES = {
    "stac2cube": ROOT / "stac2cube",
    "stac2cube.tasks": ROOT / "tasks",
    "stac2cube.flows": ROOT / "flows",
    "stac2cube.blocks": ROOT / "blocks",
}
TEMPLATES = ROOT / "stac2cube" / "testing" / "templates"

#: a warning as Python prints it (``file.py:LINE: Category: message``): setuptools' own
#: categories, or pip's ``BuildBackendWarning`` wrapping them; or any mention of a deprecation
WARNING = re.compile(r"\.py:\d+: (\w+): (.*)|[Dd]eprecat")


def _warnings(output: str, allowed: Collection[tuple[str, str]] = ()) -> list[str]:
    found = []
    for line in output.splitlines():
        match = WARNING.search(line)
        if match and match.groups() not in allowed:
            found.append(line.strip())
    return found


#: build outputs and caches that a clean checkout does not have
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "*.icechunk", "demo-cube",
)  # fmt: skip


def _clean_copy(dest: Path) -> Path:
    """A copy of the checkout without build leftovers (a stale ``build/lib`` would be shipped)."""
    shutil.copytree(ROOT, dest, ignore=_NOT_SOURCE)
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[zipfile.ZipFile, str]:
    """The wheel ``pip install .`` would install, and everything building it printed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _clean_copy(tmp / "src")
    output = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp / "dist"), "."],
        cwd=src,
    )  # fmt: skip
    (path,) = (tmp / "dist").glob("stac2cube-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf, output


def _names(zf: zipfile.ZipFile) -> set[str]:
    return set(zf.namelist())


def test_building_prints_no_warning(wheel):
    _, output = wheel
    warnings = _warnings(output)
    assert not warnings, "building the wheel warned:\n" + "\n".join(warnings)


def test_wheel_holds_every_module(wheel):
    zf, _ = wheel
    expected = set()
    for package, folder in SOURCES.items():
        for module in folder.rglob("*.py"):
            expected.add(package.replace(".", "/") + "/" + module.relative_to(folder).as_posix())
    # the mapped layers and the testing helpers are really there, not only found by the walk
    for package in ("stac2cube", *SOURCES, "stac2cube.testing"):
        expected.add(package.replace(".", "/") + "/__init__.py")
    assert "stac2cube/testing/synthetic.py" in expected
    assert not expected - _names(zf), f"missing from the wheel: {sorted(expected - _names(zf))}"


def test_wheel_holds_the_demo_templates(wheel):
    zf, _ = wheel
    templates = sorted(p.name for p in TEMPLATES.glob("*.json"))
    assert templates, f"no templates in {TEMPLATES}"
    expected = {f"stac2cube/testing/templates/{name}" for name in templates}
    assert not expected - _names(zf), f"missing from the wheel: {sorted(expected - _names(zf))}"


def test_wheel_declares_the_console_script(wheel):
    zf, _ = wheel
    (entry_points,) = (n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read_string(zf.read(entry_points).decode())
    assert parser["console_scripts"]["stac2cube"] == "stac2cube.cli:main"


def test_editable_build_maps_the_source_folders(tmp_path):
    """``pip install -e`` (scripts/setup.sh) builds too, warning-free, and maps every layer.

    The one note allowed is setuptools' ``InformationOnly: Editable installation.``, which it
    prints for every meta-path-finder editable install (any ``package-dir`` mapping like ours);
    scripts/setup.sh silences that message alone.
    """
    src = _clean_copy(tmp_path / "src")
    output = _run(
        [sys.executable, "-c",
         "from setuptools import build_meta; print(build_meta.build_editable('../dist'))"],
        cwd=src,
    )  # fmt: skip
    warnings = _warnings(output, allowed={("InformationOnly", "Editable installation.")})
    assert not warnings, "the editable build warned:\n" + "\n".join(warnings)
    (path,) = (tmp_path / "dist").glob("stac2cube-*.whl")
    with zipfile.ZipFile(path) as zf:
        (finder,) = (n for n in zf.namelist() if n.endswith("_finder.py"))
        text = zf.read(finder).decode()
    for package, folder in SOURCES.items():
        assert f"{package!r}: {str(src / folder.relative_to(ROOT))!r}" in text, package


@pytest.mark.integration
@pytest.mark.slow
def test_pip_install_dot_runs_the_demo(tmp_path):
    """``pip install .`` (non-editable) into a fresh venv, then ``stac2cube demo`` from there.

    The venv gets the dependencies without downloading: a ``.pth`` line adds this environment's
    site-packages after its own. A path line does not run that directory's ``.pth`` files, so the
    editable install living there is not seen; the test checks the demo's stac2cube is the
    installed copy.
    """
    from conftest import require

    from stac2cube.testing.pgstac import postgres_available

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
             cwd=tmp_path).strip()
    )  # fmt: skip
    (purelib / "zz_stac2cube_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    src = _clean_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", str(src)],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    where = _run(
        [str(python), "-c", "import stac2cube.testing as t; print(t.__file__)"], cwd=tmp_path
    )
    assert Path(where.strip()).is_relative_to(purelib), where

    demo = _run(
        [str(venv / "bin" / "stac2cube"), "demo", "--store", str(tmp_path / "demo.icechunk"),
         "--data", str(tmp_path / "catalog")],
        cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert re.search(r"^time\s+4 steps", demo, re.MULTILINE), demo
