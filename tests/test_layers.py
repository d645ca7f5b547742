"""The layers of the package: the core (``stac2cube/``) imports and runs without Prefect.

Tasks wrap the core, flows wire the tasks; the core never imports either, nor Prefect, when it
is imported. Each check runs in a fresh interpreter, since this test session has Prefect loaded.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import stac2cube

#: the orchestration layers, the CLI and the test builders: allowed to use Prefect
NOT_CORE = (
    "stac2cube.tasks",
    "stac2cube.flows",
    "stac2cube.blocks",
    "stac2cube.cli",
    "stac2cube.testing",
    "stac2cube.__main__",
)

#: what importing the core must leave out of ``sys.modules``
FORBIDDEN = ("prefect", "stac2cube.tasks", "stac2cube.flows")


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def core_modules() -> list[str]:
    """Every module of ``stac2cube`` outside :data:`NOT_CORE`, found without importing them."""
    names = ["stac2cube"]

    def walk(path: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(path, prefix):
            if _within(info.name, NOT_CORE):
                continue
            names.append(info.name)
            if info.ispkg:
                leaf = info.name.rsplit(".", 1)[1]
                walk([os.path.join(info.module_finder.path, leaf)], info.name + ".")

    walk(list(stac2cube.__path__), "stac2cube.")
    return names


def run_fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_FIND = f"""
import sys
def forbidden():
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in {FORBIDDEN!r}))
"""


def test_the_walk_finds_the_core():
    names = core_modules()
    for name in ("stac2cube.steps", "stac2cube.plan", "stac2cube.store", "stac2cube.search"):
        assert name in names
    assert not any(_within(name, NOT_CORE) for name in names)


def test_importing_the_core_leaves_prefect_tasks_and_flows_out():
    """Importing every core module, one after the other, loads no Prefect, task or flow.

    The first module that does is named, with what it loaded.
    """
    code = (
        _FIND
        + f"""
import importlib, json
for name in {core_modules()!r}:
    importlib.import_module(name)
    if forbidden():
        print(json.dumps({{"module": name, "loaded": forbidden()[:10]}}))
        break
else:
    print(json.dumps({{}}))
"""
    )
    assert run_fresh(code) == {}


def test_grouping_and_planning_run_without_prefect():
    """The domain is usable without Prefect: group, plan and log a plan outside any run."""
    code = (
        _FIND
        + """
import json
from stac2cube.plan import log_plan, plan_changes
from stac2cube.steps import group_items

items = [
    {"id": f"S{d}", "bbox": [10, 50, 11, 51], "properties": {"datetime": f"2024-05-0{d}T10:00:00Z"}}
    for d in (1, 3)
]
plan = plan_changes(group_items(items), [])
log_plan(plan)
print(json.dumps({"add": len(plan.add), "loaded": forbidden()}))
"""
    )
    assert run_fresh(code) == {"add": 2, "loaded": []}


def test_the_flows_stay_reachable_from_the_package():
    """``from stac2cube import get_stac_layers`` loads the flow on demand."""
    code = (
        _FIND
        + """
import json
import stac2cube
before = forbidden()
from stac2cube import get_stac_layers, update_cube
print(json.dumps({"before": before, "flows": [get_stac_layers.name, update_cube.name]}))
"""
    )
    found = run_fresh(code)
    assert found["before"] == []
    assert found["flows"] == ["get-stac-layers", "update-cube"]
