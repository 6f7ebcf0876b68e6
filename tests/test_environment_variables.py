"""Every ``FASTCONV_*`` environment variable that the code, the build, CI or the tests read is
listed in CONTRIBUTING.md and in docs/environment.md (the C macros of the build are not
environment variables)."""

import re
from pathlib import Path

import pytest

from _helpers import ROOT

DOCS = ("CONTRIBUTING.md", "docs/environment.md")
VARIABLE = re.compile(r"\bFASTCONV_[A-Z0-9_]+\b")
#: C macros set by setup.py or defined in the kernels' sources.
MACROS = {"FASTCONV_ISA", "FASTCONV_DEBUG_BUILD", "FASTCONV_SOURCE_ID", "FASTCONV_CPU_H"}


def variables_in(paths):
    """The FASTCONV_* names in the files ``paths``, less the C macros."""
    found = set()
    for path in paths:
        found |= set(VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found - MACROS


def undocumented(variables, text):
    """The names of ``variables`` that ``text`` does not mention, sorted."""
    return sorted(v for v in variables if not re.search(rf"\b{v}\b", text))


def _sources():
    here = Path(__file__).resolve()
    paths = [ROOT / "setup.py", *ROOT.glob(".ci/*")]
    for pattern in ("*.py", "*.pyx", "*.pxi", "*.h"):
        paths += ROOT.glob(f"fastconv/**/{pattern}")
    paths += [p for p in ROOT.glob("tests/**/*.py") if p != here]
    return [p for p in paths if p.is_file()]


@pytest.mark.parametrize("doc", DOCS)
def test_every_variable_is_documented(doc):
    if not (ROOT / doc).exists():
        pytest.skip(f"{doc} is not in this tree (an unpacked sdist, say)")
    variables = variables_in(_sources())
    assert {"FASTCONV_KERNELS", "FASTCONV_CYTHON_DEBUG", "FASTCONV_EXPECT_MPI"} <= variables  # the scan finds them
    assert undocumented(variables, (ROOT / doc).read_text(encoding="utf-8")) == []


def test_the_check_names_an_undocumented_variable(tmp_path):
    source = tmp_path / "new.py"
    source.write_text('os.environ.get("FASTCONV_SOMETHING_NEW") or os.environ.get("FASTCONV_DATA")\n')
    variables = variables_in([source])
    assert undocumented(variables, "| `FASTCONV_DATA` | a folder |") == ["FASTCONV_SOMETHING_NEW"]
    assert undocumented(variables, "FASTCONV_DATA and FASTCONV_SOMETHING_NEW") == []
    # a longer name does not count as the shorter one's mention
    assert undocumented({"FASTCONV_DATA"}, "FASTCONV_DATA_DIR") == ["FASTCONV_DATA"]
