"""`scripts/check_copies.py` keeps the family folders' copies of `modeling/common/` identical to their source."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import check_copies  # noqa: E402


def test_every_copy_in_the_repository_matches_its_source():
    assert check_copies.check(REPO / "modeling") == []


@pytest.fixture
def modeling(tmp_path) -> Path:
    copy = tmp_path / "modeling"
    shutil.copytree(REPO / "modeling", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_an_edited_copy_fails_the_check_naming_the_file_and_the_change(modeling):
    copy = modeling / "cman" / "losses.py"
    copy.write_text(copy.read_text().replace("margin: float = 0.2", "margin: float = 0.3"))
    problems = check_copies.check(modeling)
    assert len(problems) == 1
    assert "cman/losses.py differs from modeling/common/losses.py" in problems[0]
    assert (
        "-    def __init__(self, margin: float = 0.2" in problems[0]
        and "+    def __init__(self, margin: float = 0.3" in problems[0]
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_copies.py"), "--modeling", str(modeling)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "make fix-copies" in result.stdout
    assert check_copies.check(modeling, fix=True) == problems  # fixing reports what it rewrote
    assert check_copies.check(modeling) == []
    assert copy.read_text() == (REPO / "modeling" / "cman" / "losses.py").read_text()


def test_a_new_family_gets_the_copies_it_imports_and_loses_those_it_no_longer_needs(modeling):
    family = modeling / "newfamily"
    family.mkdir()
    (family / "modeling_newfamily.py").write_text("from .retrieval import MODALITIES\n")
    problems = check_copies.check(modeling)  # retrieval.py imports nothing else from modeling/common
    assert len(problems) == 1
    assert problems[0].endswith(
        "newfamily/retrieval.py is missing: newfamily imports .retrieval from modeling/common"
    )
    check_copies.check(modeling, fix=True)
    assert (family / "retrieval.py").read_text().startswith("# Copied from modeling.common.retrieval")
    (family / "modeling_newfamily.py").write_text("MODALITIES = ()\n")
    assert any("nothing imports" in p for p in check_copies.check(modeling))
    check_copies.check(modeling, fix=True)
    assert not (family / "retrieval.py").exists()


def test_a_sibling_file_shadowing_a_common_one_without_the_header_is_reported(modeling):
    (modeling / "cman" / "speech.py").write_text("# my own speech module\n")
    problems = check_copies.check(modeling)
    assert any("cman/speech.py shadows modeling/common/speech.py" in p for p in problems)
