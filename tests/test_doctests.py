"""The docstring examples of every module of the package run, under their installed names.

The examples document the public functions; a changed behaviour that leaves an example wrong
fails here. Examples that need a catalog or a store on disk carry ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

#: modules that run something when imported
_SKIP_MODULES = {"stac2cube.__main__"}


#: the sub-packages, mapped from the top-level folders (pkgutil does not see the mapping)
LAYERS = ("stac2cube.tasks", "stac2cube.flows", "stac2cube.blocks", "stac2cube.testing")


def _modules() -> list[str]:
    names = {"stac2cube"}
    for package in ("stac2cube", *LAYERS):
        path = importlib.import_module(package).__path__
        names.add(package)
        for info in pkgutil.walk_packages(path, prefix=package + "."):
            names.add(info.name)
    return sorted(names - _SKIP_MODULES)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, name) if t.examples]


MODULES = _modules()
WITH_EXAMPLES = [name for name in MODULES if _examples(name)]


def test_the_package_documents_itself_with_examples():
    """The walk finds the layers of the package and the modules that carry examples."""
    for layer in LAYERS:
        assert any(name.startswith(layer + ".") for name in MODULES), layer
    assert len(WITH_EXAMPLES) >= 20, WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see output)"
