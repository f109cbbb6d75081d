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


# -- params.yaml in DVC's style: no formatting diff from `dvc exp run -S` or a profile ----------


def test_params_yaml_is_shipped_in_dvc_style():
    from fairxray.profiles import dvc_style

    text = (REPO / "params.yaml").read_text()
    assert dvc_style(text) == text, "restyle: see fairxray.profiles.dvc_style"


def test_dvc_set_param_changes_only_the_line_it_sets(work):
    # The very function `dvc exp run -S` calls to rewrite params.yaml (DVC 3.67).
    from dvc.utils.hydra import apply_overrides

    before = (work / "params.yaml").read_text().splitlines()
    apply_overrides(str(work / "params.yaml"), ["tune.n_trials=2", "train.lr=0.02"])
    after = (work / "params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["lr: 0.02", "n_trials: 2"]
    # Set back, the file is the shipped one again except for DVC's own spelling of 0.01.
    apply_overrides(str(work / "params.yaml"), ["tune.n_trials=3", "train.lr=0.01"])
    again = (work / "params.yaml").read_text().splitlines()
    assert [(a, b) for a, b in zip(before, again, strict=True) if a != b] == [
        (changed[0][0], changed[0][0].replace("1.0e-2", "0.01  "))
    ]


def test_profile_demo_restores_params_byte_for_byte(work):
    shipped = (work / "params.yaml").read_bytes()
    assert cli.main(["profile", "demo"]) == 0
    assert (work / "params.yaml").read_bytes() == shipped  # the demo is a no-op on the default
    (work / "nih").mkdir()
    (work / "w").mkdir()
    assert cli.main(["profile", "paper", "--images-dir", "nih", "--weights-dir", "w"]) == 0
    assert (work / "params.yaml").read_bytes() != shipped
    assert cli.main(["profile", "demo"]) == 0
    assert (work / "params.yaml").read_bytes() == shipped


def test_dvc_style_keeps_values_and_comments():
    from fairxray.profiles import dvc_style

    text = "a: [1, 2]      # two\nb: {x: 1.0e-2}\nc: null  # none\n"
    out = dvc_style(text)
    assert (
        out
        == "a:                          # two\n- 1\n- 2\nb:\n  x: 1.0e-2\nc:                          # none\n"
    )
    assert dvc_style(out) == out


def test_paper_profile_rejects_nonexistent_paths_at_once(work, capsys):
    before = (work / "params.yaml").read_text()
    (work / "w").mkdir()
    argv = ["profile", "paper", "--images-dir", "no-nih", "--weights-dir", "w", "--metadata", "w"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no-nih: no such folder (data.images_dir)" in err
    assert "w: no such file (data.metadata)" in err  # a folder where a file is needed
    assert (work / "params.yaml").read_text() == before


def test_demo_multilabel_profile_checks_and_demo_restores_it(work):
    import yaml

    from fairxray.data.nih import TARGETS

    shipped = (work / "params.yaml").read_bytes()
    assert cli.main(["profile", "demo-multilabel"]) == 0
    p = load_params(work / "params.yaml")
    assert p.profile == "demo" and p.data.task == "multilabel"
    assert p.data.protocols == ("nih-demo-official",) and p.data.protocol == "nih-demo-official"
    assert set(p.data.classes) == set(TARGETS) and len(p.data.classes) == 15
    assert p.data.demo_official_images == 3000 and p.images.size == 32 and p.models == ("toy",)
    assert p.mitigations == () and 1 <= len(p.methods) < 5
    assert cli.main(["check"]) == 0  # `fairxray check` accepts it
    assert yaml.safe_load((work / "check" / "params.json").read_text())["ok"] is True
    assert cli.main(["profile", "demo"]) == 0
    assert (work / "params.yaml").read_bytes() == shipped


def test_nih_multilabel_extends_the_paper_profile(tmp_path):
    """nih-multilabel = the paper profile (models, training) with the multi-label task on NIH's
    official split; a profile that extends itself is refused."""
    import shutil

    from fairxray.config import load_params
    from fairxray.errors import UserError
    from fairxray.profiles import apply_profile

    repo = Path(__file__).resolve().parents[2]
    for name in ("params.yaml",):
        shutil.copy(repo / name, tmp_path / name)
    paths = {"data.images_dir": str(tmp_path), "data.weights_dir": str(tmp_path)}
    work = tmp_path / "params.yaml"
    apply_profile("paper", work, paths, profiles_dir=repo / "profiles")
    paper = load_params(work)
    shutil.copy(repo / "params.yaml", work)
    apply_profile("nih-multilabel", work, paths, profiles_dir=repo / "profiles")
    ml = load_params(work)
    assert ml.profile == "paper" and ml.models == paper.models and ml.train == paper.train
    assert ml.data.task == "multilabel" and ml.data.protocol == "nih-official"
    assert ml.data.classes[-1] == "No Finding" and len(ml.data.classes) == 15
    assert ml.tune.objective == "macro_auroc" and ml.mitigations == ()
    from fairxray.check import check_names, check_sections

    assert check_names(ml) + check_sections(ml) == []  # the task's settings agree
    loop = tmp_path / "profiles"
    loop.mkdir()
    (loop / "a.yaml").write_text("extends: b\n")
    (loop / "b.yaml").write_text("extends: a\n")
    with pytest.raises(UserError, match="'extends' loops"):
        apply_profile("a", work, profiles_dir=loop)
