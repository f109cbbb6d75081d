"""`fairxray reproduce` preflight on fake NIH and weights folders, and the run folder it prepares."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fairxray import cli
from fairxray import reproduce as r
from fairxray.data import nih
from fairxray.errors import UserError
from fairxray.models import registry

REPO = Path(__file__).resolve().parents[2]
PAPER_MODELS = tuple(yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())["models"])
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)  # the 8-byte PNG signature, then filler


def _bundled_table() -> bytes:
    return gzip.decompress(nih.bundled_metadata().read_bytes())


@pytest.fixture(scope="module")
def paper_params(tmp_path_factory):
    """The params a paper run uses (profile applied to the repository's params.yaml)."""
    tmp = tmp_path_factory.mktemp("params")
    sets = {"data.images_dir": str(tmp / "nih"), "data.weights_dir": str(tmp / "w")}
    _, p = r.profiled_params(REPO, REPO / "params.yaml", "paper", sets)
    return p


@pytest.fixture(scope="module")
def needed(paper_params):
    return r.needed_image_ids(paper_params)


def _write_nih(root: Path, ids, with_metadata: bool = True) -> Path:
    """NIH's download layout: images_001/images/*.png ... plus the metadata CSV beside them."""
    for i, image_id in enumerate(sorted(ids)):
        folder = root / f"images_{1 + i % 3:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image_id).write_bytes(FAKE_PNG)
    if with_metadata:
        (root / r.METADATA_NAME).write_bytes(_bundled_table())
    return root


def _write_weights(root: Path, models) -> Path:
    for name in models:
        folder = root / name
        folder.mkdir(parents=True)
        for fname in registry.get_spec(name).weight_files:
            (folder / fname).write_bytes(f"fake {name} {fname}".encode())
    return root


# --- metadata -------------------------------------------------------------------------------


def test_reference_is_nih_v2020_table_as_bundled():
    path, sha = r.reference_metadata()
    raw = _bundled_table()
    assert sha == hashlib.sha256(raw).hexdigest()
    lines = raw.decode().splitlines()
    # NIH ChestX-ray14: 112,120 images (Wang et al. 2017 / the NIH README), one row each.
    assert len(lines) - 1 == 112_120
    assert lines[0].startswith("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age")


def test_metadata_identical_file_passes_and_its_sha_is_what_sha256sum_prints(tmp_path):
    csv = tmp_path / r.METADATA_NAME
    csv.write_bytes(_bundled_table())
    res = r.check_metadata(csv)
    assert res.ok, res.problems
    assert hashlib.sha256(csv.read_bytes()).hexdigest() in res.checked[0]
    assert r.table_sha256(csv) == r.reference_metadata()[1]


def test_metadata_crlf_and_reformatted_unused_columns_pass(tmp_path):
    lines = _bundled_table().decode().split("\n")
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes("\r\n".join(lines).encode())
    assert r.check_metadata(crlf).ok
    # Another distribution of the file may print the pixel spacing differently (0.143 instead of
    # 0.14300000000000002): not a column the pipeline reads, so the check passes and says so.
    reformatted = tmp_path / "reformatted.csv"
    reformatted.write_text("\n".join(lines).replace("0.14300000000000002", "0.143"))
    assert reformatted.read_bytes() != _bundled_table()
    res = r.check_metadata(reformatted)
    assert res.ok, res.problems
    assert "differs from the reference" in res.checked[0] and "is identical" in res.checked[0]


def test_metadata_changed_age_fails_naming_line_and_column(tmp_path):
    lines = _bundled_table().decode().split("\n")
    fields = lines[3].split(",")  # CSV line 4: the third data row
    fields[4] = str(int(fields[4]) + 1)  # Patient Age
    lines[3] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines))
    res = r.check_metadata(bad)
    assert len(res.problems) == 1
    msg = res.problems[0]
    assert msg.startswith(f"{bad}: sha256 {hashlib.sha256(bad.read_bytes()).hexdigest()}")
    assert "1 row(s) differ" in msg and "line 4 (Patient Age)" in msg


def test_metadata_truncated_and_missing(tmp_path):
    lines = _bundled_table().decode().split("\n")
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:-11]) + "\n")  # the last 10 data rows (and final newline)
    res = r.check_metadata(short)
    assert len(res.problems) == 1 and "112110 data rows instead of 112120" in res.problems[0]
    missing = r.check_metadata(tmp_path / "nope.csv")
    assert missing.problems == [
        f"{tmp_path / 'nope.csv'}: NIH metadata file not found (--metadata / data.metadata)"
    ]
    bundled = r.check_metadata(None)
    assert bundled.ok and "bundled in torchxrayvision" in bundled.checked[0]


# --- images ---------------------------------------------------------------------------------


def test_needed_ids_are_the_prepare_stage_splits(paper_params, needed, tmp_path):
    from fairxray.data.splits import prepare

    assert set(needed) == set(paper_params.data.protocols)
    for protocol, ids in needed.items():
        prepare(paper_params, protocol, out_dir=tmp_path / protocol)
        rows = [
            set(pd.read_parquet(tmp_path / protocol / f"{s}.parquet")["image_id"])
            for s in ("train", "val", "test")
        ]
        assert ids == set().union(*rows)
        assert all(nih.IMAGE_ID.match(i) for i in ids)


def test_complete_nih_folder_passes(needed, tmp_path):
    nih_dir = _write_nih(tmp_path / "nih", set().union(*needed.values()))
    res = r.check_images(nih_dir, needed)
    assert res.ok, res.problems
    assert "NIH layout (3 images_NNN/images folders)" in res.checked[0]


def test_missing_empty_and_non_png_images_are_all_reported(needed, tmp_path):
    all_ids = sorted(set().union(*needed.values()))
    nih_dir = _write_nih(tmp_path / "nih", all_ids)
    pngs = {p.name: p for p in nih_dir.rglob("*.png")}
    removed, emptied, garbage = all_ids[:3], all_ids[3:5], all_ids[5]
    for i in removed:
        pngs[i].unlink()
    for i in emptied:
        pngs[i].write_bytes(b"")
    pngs[garbage].write_bytes(b"GIF89a...")
    res = r.check_images(nih_dir, needed)
    expected_missing = {
        proto: len(set(removed) & ids) for proto, ids in needed.items() if set(removed) & ids
    }
    missing_msgs = [m for m in res.problems if "are missing" in m]
    assert len(missing_msgs) == len(expected_missing)
    for proto, n in expected_missing.items():
        ids = needed[proto]
        assert any(
            f"{n} of the {len(ids)} images protocol '{proto}' needs" in m for m in missing_msgs
        )
    (bad_msg,) = [m for m in res.problems if "empty or not PNGs" in m]
    assert "3 needed image file(s)" in bad_msg
    assert f"{emptied[0]} (empty)" in bad_msg and f"{garbage} (not a PNG)" in bad_msg


def test_wrong_folder_layouts(needed, tmp_path):
    assert "NIH images folder not found" in r.check_images(tmp_path / "absent", needed).problems[0]
    (tmp_path / "empty").mkdir()
    assert "no PNG files" in r.check_images(tmp_path / "empty", needed).problems[0]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scan1.png").write_bytes(FAKE_PNG)
    msg = r.check_images(tmp_path / "other", needed).problems[0]
    assert "1 PNG file(s), none named like NIH's" in msg


def test_official_lists(paper_params, tmp_path):
    res = r.check_official_lists(None)
    assert len(res.problems) == 1
    assert "train_val_list.txt and test_list.txt" in res.problems[0]
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\nnot-an-id\n")
    res = r.check_official_lists(tmp_path)
    assert res.problems == [
        f"{tmp_path / 'test_list.txt'}: line 2: 'not-an-id' is not an NIH image id (1 bad lines)"
    ]
    assert r.find_official_lists(tmp_path, None) == tmp_path
    assert r.find_official_lists(tmp_path / "x", None) is None


# --- weights, out, GPU, all together --------------------------------------------------------


def test_fake_weights_pass_where_no_hash_is_known_and_fail_precisely_where_one_is(tmp_path):
    wdir = _write_weights(tmp_path / "w", PAPER_MODELS)
    res = r.check_weights(PAPER_MODELS, wdir)
    hashed = [n for n in PAPER_MODELS if any(registry.get_spec(n).sha256.values())]
    unhashed = [n for n in PAPER_MODELS if n not in hashed]
    assert hashed and unhashed  # both kinds are exercised
    assert len(res.problems) == len(hashed)
    for name, msg in zip(hashed, res.problems, strict=True):
        spec = registry.get_spec(name)
        (fname,) = spec.weight_files
        got = hashlib.sha256(f"fake {name} {fname}".encode()).hexdigest()
        assert msg == (
            f"{wdir / name}: weights for model '{name}' not usable ({fname}: sha256 {got[:12]}... "
            f"does not match upstream {spec.sha256[fname][:12]}...); download from "
            f"{spec.source} (licence: {spec.license}) and place {fname} there"
        )
    assert [c.split(":")[1].strip() for c in res.checked] == [str(wdir / n) for n in unhashed]


def test_load_weights_builds_each_model_strictly(tmp_path):
    from fairxray.models.toy import save_toy

    save_toy(registry.create("toy"), tmp_path / "good" / "toy")
    res = r.check_weights(["toy"], tmp_path / "good", load=True)
    assert res.ok and "loaded strictly on the CPU" in res.checked[0]
    (tmp_path / "bad" / "toy").mkdir(parents=True)
    (tmp_path / "bad" / "toy" / "model.safetensors").write_bytes(b"not safetensors")
    assert not r.check_weights(["toy"], tmp_path / "bad", load=False).problems
    bad = r.check_weights(["toy"], tmp_path / "bad", load=True)
    assert len(bad.problems) == 1
    # The reader names the file and what is wrong with it.
    assert bad.problems[0].startswith(
        f"{tmp_path / 'bad' / 'toy' / 'model.safetensors'}: not a readable safetensors file"
    )


def test_out_folder_and_gpu(tmp_path):
    assert r.check_out(tmp_path / "new" / "out").ok
    assert not (tmp_path / "new").exists()  # a check creates nothing
    (tmp_path / "kept").mkdir()
    assert r.check_out(tmp_path / "kept").ok and not list((tmp_path / "kept").iterdir())
    (tmp_path / "kept" / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        assert not r.check_out(tmp_path / "kept" / "ro" / "out").ok
    (tmp_path / "file").write_text("x")
    (msg,) = r.check_out(tmp_path / "file" / "out").problems
    assert "output folder cannot be created or written" in msg and "--user" in msg
    assert r.check_gpu(False, lambda: "Fake H100").checked[0].startswith("GPU: Fake H100")
    no_gpu = r.check_gpu(False, lambda: None)
    assert len(no_gpu.problems) == 1 and "--gpus all" in no_gpu.problems[0]
    allowed = r.check_gpu(True, lambda: None)
    assert allowed.ok and len(allowed.warnings) == 1


def test_good_fake_inputs_leave_only_the_hash_checked_weights(paper_params, needed, tmp_path):
    nih_dir = _write_nih(tmp_path / "nih", set().union(*needed.values()))
    wdir = _write_weights(tmp_path / "w", paper_params.models)
    res = r.preflight(
        paper_params,
        tmp_path / "out",
        images_dir=nih_dir,
        weights_dir=wdir,
        metadata=r.find_metadata(nih_dir, None),
        gpu=lambda: "Fake GPU",
    )
    hashed = [n for n in paper_params.models if any(registry.get_spec(n).sha256.values())]
    assert [m.split(":")[0] for m in res.problems] == [str(wdir / n) for n in hashed]
    assert all("sha256" in m and "does not match upstream" in m for m in res.problems)
    with pytest.raises(UserError) as err:
        r.require_ok(res)
    assert str(err.value).startswith(f"reproduce: {len(hashed)} problem(s) found before any work")


def test_cli_reports_every_missing_input_in_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(r.checks, "cuda_device", lambda: None)
    monkeypatch.chdir(REPO)
    (tmp_path / "blocker").write_text("a file where the out folder's parent should be")
    (tmp_path / "nih").mkdir()
    (tmp_path / "nih" / r.METADATA_NAME).write_text("Image Index,Finding Labels\nx.png,y\n")
    out = tmp_path / "blocker" / "out"
    rc = cli.main(
        ["reproduce", "--images-dir", str(tmp_path / "nih"), "--weights-dir", str(tmp_path / "w"),
         "--out", str(out), "--check-only"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1
    assert f"{tmp_path / 'nih'}: no PNG files" in err
    assert f"{tmp_path / 'nih' / r.METADATA_NAME}: sha256" in err
    assert f"{tmp_path / 'w'}: weights folder not found" in err
    for name in PAPER_MODELS:
        assert f"weights for model '{name}' not usable" in err
        assert registry.get_spec(name).source in err
    assert f"{out}: output folder cannot be created" in err
    assert "no CUDA GPU" in err
    n = 1 + 1 + 1 + len(PAPER_MODELS) + 1 + 1
    assert f"{n} problem(s) found before any work was started" in err
    assert not out.exists()


def test_cli_without_any_folder_still_lists_everything(tmp_path, monkeypatch, capsys):
    for var in (r.ENV_IMAGES_DIR, r.ENV_WEIGHTS_DIR, r.ENV_OUT, r.ENV_METADATA):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(r.checks, "cuda_device", lambda: None)
    monkeypatch.chdir(REPO)
    assert cli.main(["reproduce", "--check-only"]) == 2
    err = capsys.readouterr().err
    for what in (
        "images folder: not given",
        "weights folder: not given",
        "output folder: not given",
        "no CUDA GPU",
    ):
        assert what in err


def test_cli_check_only_passes_on_good_inputs(paper_params, needed, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(r.checks, "cuda_device", lambda: "Fake GPU")
    monkeypatch.chdir(REPO)
    nih_dir = _write_nih(tmp_path / "nih", set().union(*needed.values()))
    wdir = _write_weights(tmp_path / "w", ["toy"])
    monkeypatch.setenv(r.ENV_IMAGES_DIR, str(nih_dir))
    monkeypatch.setenv(r.ENV_WEIGHTS_DIR, str(wdir))
    monkeypatch.setenv(r.ENV_OUT, str(tmp_path / "out"))
    assert cli.main(["reproduce", "--check-only", "--set", "models=[toy]"]) == 0
    text = capsys.readouterr().out
    assert "preflight: every input checked" in text and "--check-only: nothing run" in text
    assert f"metadata: {nih_dir / r.METADATA_NAME} sha256" in text
    assert not (tmp_path / "out").exists()  # --check-only writes nothing, not even the folder


# --- the run folder -------------------------------------------------------------------------


def _deps_and_outs() -> tuple[set[str], set[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps, outs = set(), set()
    for stage in stages.values():
        body = stage.get("do", stage)
        deps.update(d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", []))
        outs.update(o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", []))
    return deps, outs


def test_run_folder_holds_every_dvc_dependency_that_is_not_an_output():
    deps, outs = _deps_and_outs()
    out_prefixes = {o.split("${")[0] for o in outs}
    for dep in deps:
        fixed = dep.split("${")[0]
        if any(fixed.startswith(o) or o.startswith(fixed) for o in out_prefixes if o):
            continue
        assert fixed.split("/")[0] in r.PIPELINE_FILES, f"dvc.yaml dep {dep} is not copied"
        assert (REPO / fixed).exists() or "${" in dep, dep


def test_prepare_run_dir_is_a_dvc_project_and_keeps_state_on_rerun(tmp_path):
    sets = {"data.images_dir": str(tmp_path / "nih"), "data.weights_dir": str(tmp_path / "w")}
    text, p = r.profiled_params(REPO, REPO / "params.yaml", "paper", sets)
    out = r.prepare_run_dir(REPO, tmp_path / "out", text)
    written = yaml.safe_load((out / "params.yaml").read_text())
    assert written["profile"] == "paper" and written["data"]["images_dir"] == str(tmp_path / "nih")
    assert written["models"] == list(PAPER_MODELS)
    assert (out / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    assert (out / "src" / "fairxray" / "reproduce" / "run.py").is_file()
    assert not list(out.rglob("__pycache__"))
    config = (out / ".dvc" / "config").read_text()
    assert "no_scm = True" in config and "analytics = false" in config
    assert (out / "mlruns").is_dir()
    listed = subprocess.run(
        [r.dvc_executable(), "stage", "list"],
        cwd=out,
        env=r.run_env(),
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert "prepare@nih6x200-paper" in listed.stdout
    # A rerun refreshes the pipeline files and params but keeps state and outputs.
    (out / "dvc.lock").write_text("schema: '2.0'\n")
    (out / "studies").mkdir()
    (out / "studies" / "optuna.db").write_text("study")
    (out / "src" / "fairxray" / "stale_module.py").write_text("")
    r.prepare_run_dir(REPO, out, text.replace("n_boot: 1000", "n_boot: 999"))
    assert (out / "dvc.lock").read_text() == "schema: '2.0'\n"
    assert (out / "studies" / "optuna.db").read_text() == "study"
    assert not (out / "src" / "fairxray" / "stale_module.py").exists()
    assert yaml.safe_load((out / "params.yaml").read_text())["metrics"]["n_boot"] == 999
    with pytest.raises(UserError, match="other than the project"):
        r.prepare_run_dir(REPO, REPO, text)


def test_run_folder_inside_a_git_checkout(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    text, _ = r.profiled_params(REPO, REPO / "params.yaml", "demo", {})
    out = r.prepare_run_dir(REPO, tmp_path / "runs" / "demo", text)
    listed = subprocess.run(
        [r.dvc_executable(), "stage", "list"],
        cwd=out,
        env=r.run_env(),
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    root = subprocess.run(
        [r.dvc_executable(), "root"], cwd=out, env=r.run_env(), capture_output=True, text=True
    )
    assert root.stdout.strip() == "."


def test_demo_needs_an_out_folder(monkeypatch, capsys):
    monkeypatch.delenv(r.ENV_OUT, raising=False)
    monkeypatch.chdir(REPO)
    assert cli.main(["demo"]) == 2
    assert "--out: not given" in capsys.readouterr().err


def test_demo_refuses_a_real_data_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    assert cli.main(["demo", "--profile", "paper", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--profile paper: not a demo profile" in err or "paper profile needs" in err
    assert not out.exists()  # refused before anything is written


def test_project_commit_from_git_or_the_image_build_arg(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f.txt").write_text("1")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "f.txt"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert r.project_commit(repo) == head
    (repo / "f.txt").write_text("2")
    assert r.project_commit(repo) == head + "-dirty"
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv(r.ENV_GIT_SHA, "abc123")
    assert r.project_commit(plain) == "abc123"
    assert r.run_env("abc123")[r.ENV_GIT_SHA] == "abc123"
    monkeypatch.setenv(r.ENV_GIT_SHA, "unknown")  # the Dockerfile's default build arg
    assert r.project_commit(plain) is None
    path = r.write_run_record(plain, {"commit": None, "images_dir": plain})
    assert json.loads(path.read_text()) == {"commit": None, "images_dir": str(plain)}


@pytest.mark.slow
@pytest.mark.heavy  # the whole paper-profile graph (2 min); the demo graphs run in tests/smoke
def test_reproduce_runs_the_paper_profile_on_fake_nih_and_toy_weights(
    needed, tmp_path, monkeypatch, capfd
):
    """The whole `reproduce` path on CPU: fake NIH PNGs, the toy model's weights, small settings."""
    import numpy as np
    from PIL import Image

    from fairxray.models.toy import save_toy

    rng = np.random.default_rng(0)
    nih_dir = tmp_path / "nih"
    for i, image_id in enumerate(sorted(set().union(*needed.values()))):
        folder = nih_dir / f"images_{1 + i % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        # 32 px: the smallest source images.min_source_size accepts.
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / image_id)
    (nih_dir / r.METADATA_NAME).write_bytes(_bundled_table())
    save_toy(registry.create("toy"), tmp_path / "w" / "toy")
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    argv = ["reproduce", "--images-dir", str(nih_dir), "--weights-dir", str(tmp_path / "w"),
            "--out", str(out), "--allow-cpu", "--set", "models=[toy]",
            "--set", "methods=[zero_shot, linear_probe]", "--set", "images.size=32",
            "--set", "metrics.n_boot=10"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capfd.readouterr().out
    assert "preflight: every input checked" in text and "reproduce: finished" in text
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert params["profile"] == "paper" and params["data"]["images_dir"] == str(nih_dir)
    for protocol in params["data"]["protocols"]:
        cache = json.loads((out / "data" / "images" / protocol / "manifest.json").read_text())
        assert cache["complete"] and cache["source"] == "nih"
    # The report covers the grid the run was configured with (MLflow logging is a later stage).
    assert "linear_probe" in (out / "reports" / "report.md").read_text()
    assert (out / "mlruns").is_dir()
    assert json.loads((out / "run.json").read_text())["command"] == "reproduce"
