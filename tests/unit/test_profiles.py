import shutil
from pathlib import Path

import pytest

from fairxray import cli
from fairxray.config import load_params
from fairxray.errors import UserError
from fairxray.profiles import apply_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def work(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_paper_profile_then_demo_restores_the_demo(work):
    before = load_params(work / "params.yaml")
    (work / "nih").mkdir()
    (work / "w").mkdir()
    assert cli.main(["profile", "paper", "--images-dir", "nih", "--weights-dir", "w"]) == 0
    p = load_params(work / "params.yaml")
    assert p.profile == "paper" and p.data.protocol == "nih6x200-paper"
    assert p.data.images_dir == str((work / "nih").resolve())
    assert "toy" not in p.models and p.images.size == 256
    assert (
        "# the protocol the model grid trains and evaluates on"
        in (work / "params.yaml").read_text()
    )
    assert cli.main(["profile", "demo"]) == 0
    assert load_params(work / "params.yaml") == before
    # Comments survive the round trip (ruamel keeps them; their column may shift).
    text = (work / "params.yaml").read_text()
    assert "# side of the cached square uint8 images" in text and "null = random init" in text


def test_paper_profile_without_folders_fails_and_leaves_params_alone(work, capsys):
    before = (work / "params.yaml").read_text()
    assert cli.main(["profile", "paper"]) == 2
    assert "paper profile needs 'data.images_dir' and 'data.weights_dir'" in capsys.readouterr().err
    assert (work / "params.yaml").read_text() == before


def test_unknown_profile_and_key(work):
    with pytest.raises(UserError, match="no such profile"):
        apply_profile("fast", Path("params.yaml"))
    with pytest.raises(UserError, match="params.yaml has no key 'data.colour'"):
        apply_profile("demo", Path("params.yaml"), {"data.colour": 1})


def test_a_profile_replaces_the_search_space_whole(work):
    import yaml

    (work / "nih").mkdir()
    (work / "w").mkdir()
    assert cli.main(["profile", "paper", "--images-dir", "nih", "--weights-dir", "w"]) == 0
    want = yaml.safe_load((work / "profiles" / "paper.yaml").read_text())["tune"]["space"]
    got = yaml.safe_load((work / "params.yaml").read_text())["tune"]["space"]
    assert got == want  # no demo-sized head widths or LoRA ranks left behind


def test_paper_profile_rejects_nonexistent_paths_at_once(work, capsys):
    before = (work / "params.yaml").read_text()
    (work / "w").mkdir()
    argv = ["profile", "paper", "--images-dir", "no-nih", "--weights-dir", "w", "--metadata", "w"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no-nih: no such folder (data.images_dir)" in err
    assert "w: no such file (data.metadata)" in err  # a folder where a file is needed
    assert (work / "params.yaml").read_text() == before
