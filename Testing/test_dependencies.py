"""Installing Python dependencies inside Slicer, with a stand-in ``slicer`` module (the
application cannot run here): one question, then installation without a second prompt, through
``slicer.packaging.pip_ensure`` (5.12+, a submodule that must be imported) or
``slicer.util.pip_install`` (5.10, 5.11); and one minimum Slicer version everywhere."""

from __future__ import annotations

import json
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from mskquant import dependencies
from mskquant.errors import MSKQuantError

ROOT = Path(__file__).resolve().parents[1]


class FakeSlicer:
    """A stand-in ``slicer`` module that records what the dependency code asks of it."""

    def __init__(self, version=(5, 12), with_packaging=True, answer=True):
        self.calls = []
        mod = types.ModuleType("slicer")  # not a package: ``import slicer.packaging`` fails like on 5.10
        opts = types.SimpleNamespace(testingEnabled=False)
        mod.app = types.SimpleNamespace(majorVersion=version[0], minorVersion=version[1], commandOptions=lambda: opts)
        mod.util = types.SimpleNamespace(
            confirmOkCancelDisplay=lambda text, title=None: self.calls.append(("ask", text)) or answer,
            pip_install=lambda reqs: self.calls.append(("pip_install", list(reqs))))
        self.module = mod
        self.packaging = None
        if with_packaging:
            self.packaging = types.ModuleType("slicer.packaging")
            self.packaging.pip_ensure = lambda reqs, **kw: self.calls.append(("pip_ensure", list(reqs), kw))

    def install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "slicer", self.module)
        if self.packaging is not None:
            monkeypatch.setitem(sys.modules, "slicer.packaging", self.packaging)
        else:
            monkeypatch.delitem(sys.modules, "slicer.packaging", raising=False)


@pytest.fixture
def missing_scipy(monkeypatch):
    """scipy is missing until an installer was called."""
    state = {"installed": False}
    monkeypatch.setattr(dependencies, "_checked", False)
    monkeypatch.setattr(dependencies, "_declined", False)
    monkeypatch.setattr(dependencies, "missing_requirements",
                        lambda reqs, version_of=None: [] if state["installed"] else ["scipy>=1.10"])
    return state


def _mark_installed(fake, state):
    for name in ("pip_install",):
        orig = getattr(fake.module.util, name)
        setattr(fake.module.util, name, lambda reqs, o=orig: (o(reqs), state.update(installed=True)))
    if fake.packaging is not None:
        orig = fake.packaging.pip_ensure
        fake.packaging.pip_ensure = lambda reqs, o=orig, **kw: (o(reqs, **kw), state.update(installed=True))


def test_slicer_5_12_asks_once_then_pip_ensure_without_a_second_prompt(monkeypatch, missing_scipy):
    fake = FakeSlicer((5, 12), with_packaging=True)
    _mark_installed(fake, missing_scipy)
    fake.install(monkeypatch)
    dependencies.ensure_dependencies()
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["ask", "pip_ensure"]
    _, reqs, kw = fake.calls[1]
    assert reqs == ["scipy>=1.10"]
    assert kw["prompt_install"] is False and kw["skip_in_testing"] is False and kw["requester"] == "MSKQuant"
    dependencies.ensure_dependencies()  # checked: nothing asked again
    assert len(fake.calls) == 2


def test_slicer_5_10_has_no_packaging_and_uses_pip_install(monkeypatch, missing_scipy):
    fake = FakeSlicer((5, 10), with_packaging=False)
    _mark_installed(fake, missing_scipy)
    fake.install(monkeypatch)
    dependencies.ensure_dependencies()
    assert [c[0] for c in fake.calls] == ["ask", "pip_install"]


def test_declining_stops_processing_and_is_not_asked_twice(monkeypatch, missing_scipy):
    fake = FakeSlicer((5, 12), answer=False)
    fake.install(monkeypatch)
    for _ in range(2):
        with pytest.raises(MSKQuantError, match="declined"):
            dependencies.ensure_dependencies()
    assert [c[0] for c in fake.calls] == ["ask"]


def test_older_slicer_is_refused_before_anything_is_installed(monkeypatch, missing_scipy):
    fake = FakeSlicer((5, 8), with_packaging=False)
    fake.install(monkeypatch)
    with pytest.raises(MSKQuantError, match=r"3D Slicer 5\.10 or later; this is 5\.8"):
        dependencies.ensure_dependencies()
    assert fake.calls == []


def test_minimum_slicer_version_is_one_number_everywhere():
    minimum = dependencies.MINIMUM_SLICER_VERSION
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(MSKQUANT_MINIMUM_SLICER_VERSION "([\d.]+)"\)', cmake).group(1) == minimum
    assert "find_package(Slicer ${MSKQUANT_MINIMUM_SLICER_VERSION} REQUIRED)" in cmake
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(re.findall(r"Slicer (\d+\.\d+) or later", readme)) == {minimum}
    # pyproject: the Python that the minimum Slicer ships satisfies requires-python
    py = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    lower = tuple(int(x) for x in re.fullmatch(r">=\s*([\d.]+)", py).group(1).split("."))
    assert lower <= tuple(int(x) for x in dependencies.MINIMUM_SLICER_PYTHON.split("."))
    # MSKQuant.json has no version field (the catalog schema forbids extra keys): the minimum is the
    # ExtensionsIndex branch it is submitted to, which the README names
    entry = json.loads((ROOT / "MSKQuant.json").read_text(encoding="utf-8"))
    assert not any("version" in k for k in entry)
    assert f"ExtensionsIndex branches {minimum} and later" in readme
