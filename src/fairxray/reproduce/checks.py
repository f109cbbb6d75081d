"""The preflight of ``fairxray reproduce``: check every input before any work.

:func:`preflight` looks at everything a paper run needs before any GPU work: the NIH image folder
(layout, and every image the configured protocols need), the metadata table (its checksum against
the copy bundled in torchxrayvision), NIH's official split lists when ``nih-official`` is
requested, each configured model's weights (through the model registry), the output folder and a
CUDA GPU. It collects every problem and :func:`require_ok` raises one :class:`UserError` listing
them all, so a user fixes everything in one round.

The run folder itself is :mod:`fairxray.reproduce.run`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairxray.config import Params
from fairxray.data import nih
from fairxray.data.images import find_pngs
from fairxray.errors import UserError
from fairxray.models import registry
from fairxray.reproduce.names import (  # noqa: F401 - re-exported
    ENV_IMAGES_DIR,
    ENV_METADATA,
    ENV_OUT,
    ENV_WEIGHTS_DIR,
    METADATA_NAME,
)

OFFICIAL_LISTS = ("train_val_list.txt", "test_list.txt")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_EXAMPLES = 5  # ids quoted per problem; the count covers the rest


@dataclass
class Preflight:
    """Outcome of :func:`preflight`: ``problems`` block the run, ``warnings`` do not, ``checked``
    says what was found in order."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, other: Preflight) -> None:
        self.problems += other.problems
        self.warnings += other.warnings
        self.checked += other.checked


def require_ok(result: Preflight, what: str = "reproduce") -> None:
    """Raise one :class:`UserError` listing every problem (numbered), or return quietly."""
    if result.ok:
        return
    lines = [f"{what}: {len(result.problems)} problem(s) found before any work was started:"]
    lines += [f"  {i}. {p}" for i, p in enumerate(result.problems, 1)]
    if result.warnings:
        lines += ["warnings:"] + [f"  - {w}" for w in result.warnings]
    raise UserError("\n".join(lines))


def _examples(items: Iterable[str]) -> str:
    items = sorted(items)
    shown = ", ".join(items[:MAX_EXAMPLES])
    return shown + (
        f", ... ({len(items) - MAX_EXAMPLES} more)" if len(items) > MAX_EXAMPLES else ""
    )


# --- metadata -------------------------------------------------------------------------------


def _text_bytes(path: Path) -> bytes:
    """The table's bytes, decompressed if gzipped, with CRLF line ends turned into LF (a CSV
    saved on Windows is the same table)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.replace(b"\r\n", b"\n")


def table_sha256(path: Path) -> str:
    """sha256 of the metadata table as text (see :func:`_text_bytes`); for the plain LF CSV that
    NIH distributes this is what ``sha256sum`` prints."""
    return hashlib.sha256(_text_bytes(path)).hexdigest()


def _columns_sha256(path: Path) -> tuple[str, pd.DataFrame]:
    """sha256 over the columns the pipeline reads (``nih.REQUIRED``), as text in file order."""
    df = pd.read_csv(io.BytesIO(_text_bytes(path)), dtype=str, keep_default_na=False)
    missing = [c for c in nih.REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(repr(c) for c in missing)}")
    cols = df[list(nih.REQUIRED)]
    text = cols.to_csv(index=False, lineterminator="\n").encode()
    return hashlib.sha256(text).hexdigest(), cols


def _column_difference(path: Path, ref_path: Path) -> str | None:
    """None when the columns the pipeline reads are identical to the reference's, else how
    they differ."""
    try:
        got, cols = _columns_sha256(path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return f"not a readable NIH metadata CSV ({exc})"
    want, ref_cols = _columns_sha256(ref_path)
    if got == want:
        return None
    if len(cols) != len(ref_cols):
        return f"{len(cols)} data rows instead of {len(ref_cols)}"
    diff = (cols.to_numpy() != ref_cols.to_numpy()).any(axis=1).nonzero()[0]
    first = int(diff[0])
    bad_cols = [c for c in nih.REQUIRED if cols[c].iat[first] != ref_cols[c].iat[first]]
    return (
        f"{len(diff)} row(s) differ in the columns the pipeline reads, first at line "
        f"{first + 2} ({', '.join(bad_cols)})"
    )


@functools.cache
def reference_metadata() -> tuple[Path, str]:
    """The bundled NIH table (torchxrayvision's gzipped ``Data_Entry_2017_v2020.csv``) and the
    sha256 of its decompressed text: the table every protocol is defined on."""
    path = nih.bundled_metadata()
    return path, table_sha256(path)


def find_metadata(images_dir: Path | None, configured: str | None) -> Path | None:
    """The user's metadata table: ``configured`` if given, else NIH's CSV next to the images."""
    if configured:
        return Path(configured)
    if images_dir is not None and (images_dir / METADATA_NAME).is_file():
        return images_dir / METADATA_NAME
    return None


def check_metadata(path: Path | None) -> Preflight:
    """The user's table must be the one the protocols are defined on: byte-identical to the
    bundled copy, or identical in every column the pipeline reads (other columns such as the
    pixel spacing may be formatted differently by other distributions of the file)."""
    out = Preflight()
    ref_path, ref_sha = reference_metadata()
    if path is None:
        out.checked.append(
            f"metadata: no {METADATA_NAME} given or found next to the images; using the copy "
            f"bundled in torchxrayvision ({ref_path}, sha256 {ref_sha})"
        )
        return out
    if not path.is_file():
        out.problems.append(f"{path}: NIH metadata file not found (--metadata / data.metadata)")
        return out
    sha = table_sha256(path)
    if sha == ref_sha:
        out.checked.append(f"metadata: {path} sha256 {sha} matches the reference table")
        return out
    detail = _column_difference(path, ref_path)
    if detail is None:
        out.checked.append(
            f"metadata: {path} sha256 {sha} differs from the reference {ref_sha}, but every "
            f"column the pipeline reads ({', '.join(nih.REQUIRED)}) is identical"
        )
        return out
    out.problems.append(
        f"{path}: sha256 {sha} is not NIH's {METADATA_NAME} ({ref_sha}, the copy bundled in "
        f"torchxrayvision): {detail}. Use the v2020 table from the NIH download (the 2017 "
        f"release has known age errors), or remove the file to use the bundled copy"
    )
    return out


# --- images ---------------------------------------------------------------------------------


def needed_image_ids(p: Params, skip: Iterable[str] = ()) -> dict[str, set[str]]:
    """Protocol -> the image ids its splits use, computed on the reference table exactly as the
    ``prepare`` stage will; protocols in ``skip`` (e.g. nih-official without its lists) are left out."""
    from fairxray.data.splits import make_splits

    meta = nih.read_metadata(reference_metadata()[0])
    out: dict[str, set[str]] = {}
    for protocol in p.data.protocols:
        if protocol in skip:
            continue
        splits, _ = make_splits(p, protocol, meta)
        out[protocol] = set().union(*(set(df["image_id"]) for df in splits.values()))
    return out


def _layout(images_dir: Path, pngs: Mapping[str, Path]) -> str:
    parents = {path.parent for path in pngs.values()}
    nih_style = {d for d in parents if d.name == "images" and d.parent.name.startswith("images_")}
    if nih_style and nih_style == parents:
        return f"NIH layout ({len(nih_style)} images_NNN/images folders)"
    if parents == {images_dir}:
        return "flat folder"
    return f"{len(parents)} folders"


def check_images(images_dir: Path | None, needed: Mapping[str, set[str]]) -> Preflight:
    """The folder exists, holds NIH-named PNGs, and every image the protocols need is there,
    non-empty and starts with the PNG signature (decoding happens in the ``images`` stage)."""
    out = Preflight()
    if images_dir is None:
        out.problems.append("images folder: not given (--images-dir or $FAIRXRAY_IMAGES_DIR)")
        return out
    if not images_dir.is_dir():
        out.problems.append(
            f"{images_dir}: NIH images folder not found (expected NIH ChestX-ray14's "
            f"images_001/images/00000001_000.png ... images_012/images/..., or one flat folder)"
        )
        return out
    pngs = find_pngs(images_dir)
    nih_named = {k for k in pngs if nih.IMAGE_ID.match(k)}
    if not nih_named:
        what = f"{len(pngs)} PNG file(s), none named like NIH's" if pngs else "no PNG files"
        out.problems.append(
            f"{images_dir}: {what} (expected NIH ChestX-ray14 images such as "
            f"images_001/images/00000001_000.png)"
        )
        return out
    for protocol, ids in needed.items():
        missing = ids - set(pngs)
        if missing:
            out.problems.append(
                f"{images_dir}: {len(missing)} of the {len(ids)} images protocol '{protocol}' "
                f"needs are missing: {_examples(missing)}"
            )
    bad: dict[str, str] = {}
    for image_id in set().union(*needed.values()) & set(pngs):
        path = pngs[image_id]
        with path.open("rb") as f:
            head = f.read(len(PNG_SIGNATURE))
        if head != PNG_SIGNATURE:
            bad[image_id] = "empty" if not head else "not a PNG"
    if bad:
        out.problems.append(
            f"{images_dir}: {len(bad)} needed image file(s) are empty or not PNGs: "
            f"{_examples(f'{k} ({v})' for k, v in bad.items())}"
        )
    out.checked.append(
        f"images: {images_dir}: {len(pngs)} PNGs ({len(nih_named)} NIH-named), "
        f"{_layout(images_dir, pngs)}"
    )
    return out


def find_official_lists(images_dir: Path | None, configured: str | None) -> Path | None:
    if configured:
        return Path(configured)
    if images_dir is not None and all((images_dir / n).is_file() for n in OFFICIAL_LISTS):
        return images_dir
    return None


def check_official_lists(lists_dir: Path | None) -> Preflight:
    out = Preflight()
    if lists_dir is None:
        out.problems.append(
            f"nih-official protocol: NIH's {' and '.join(OFFICIAL_LISTS)} not found next to the "
            f"images; pass --official-lists-dir (sets data.official_lists_dir)"
        )
        return out
    for name in OFFICIAL_LISTS:
        try:
            ids = nih.read_list(lists_dir / name)
        except UserError as exc:
            out.problems.append(str(exc))
        else:
            out.checked.append(f"official list: {lists_dir / name}: {len(ids)} image ids")
    return out


# --- weights, output folder, GPU ------------------------------------------------------------


def check_weights(models: Iterable[str], weights_dir: Path | None, load: bool = False) -> Preflight:
    """Every model's files through the registry (presence, sha256 where upstream's is known);
    with ``load``, also build each model on the CPU from its files (strict key matching)."""
    out = Preflight()
    if weights_dir is None:
        out.problems.append("weights folder: not given (--weights-dir or $FAIRXRAY_WEIGHTS_DIR)")
        return out
    if not weights_dir.is_dir():
        out.problems.append(f"{weights_dir}: weights folder not found")
    for name in models:
        spec = registry.get_spec(name)
        status = registry.weights_status(name, weights_dir)
        if not status.valid:
            out.problems.append(registry.missing_weights_message(spec, status))
            continue
        unknown = [f for f, v in status.checked.items() if v == "unknown-hash"]
        note = f" (no upstream sha256 for {', '.join(unknown)})" if unknown else ""
        if load:
            try:
                registry.create(name, weights_dir)
            except UserError as exc:
                out.problems.append(str(exc))
                continue
            except Exception as exc:  # a corrupt file fails inside its reader (safetensors, torch)
                first = (str(exc).strip().splitlines() or [""])[0]
                out.problems.append(
                    f"{status.folder}: weights for model '{name}' cannot be loaded "
                    f"({type(exc).__name__}: {first})"
                )
                continue
            note += "; loaded strictly on the CPU"
        out.checked.append(f"weights: {status.folder}: present{note}")
    return out


def check_out(out_dir: Path) -> Preflight:
    """The output folder can be created and written (bind mounts are often owned by another user).

    A check leaves nothing behind: a missing folder is not created (its nearest existing parent
    must take a file), and the probe file is removed at once."""
    out = Preflight()
    probe_dir = out_dir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        if not probe_dir.is_dir():
            raise NotADirectoryError(20, "not a directory", str(probe_dir))
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".fairxray-write-test-"):
            pass
    except OSError as exc:
        uid = os.getuid() if hasattr(os, "getuid") else "?"
        out.problems.append(
            f"{out_dir}: output folder cannot be created or written by uid {uid} "
            f"({exc.strerror or exc}); in "
            f'Docker pass --user "$(id -u):$(id -g)" or make the folder writable'
        )
    else:
        out.checked.append(f"output: {out_dir}: writable")
    return out


def cuda_device() -> str | None:
    """Name of the first CUDA device torch sees, or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def check_gpu(allow_cpu: bool, probe: Callable[[], str | None] | None = None) -> Preflight:
    """A CUDA device for torch; ``probe`` replaces :func:`cuda_device` (tests)."""
    out = Preflight()
    import torch

    device = (probe or cuda_device)()
    if device:
        out.checked.append(f"GPU: {device} (torch {torch.__version__}, CUDA {torch.version.cuda})")
        return out
    msg = (
        f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA "
        f"{torch.version.cuda}); in Docker use `docker run --gpus all` with the NVIDIA Container "
        f"Toolkit and a driver for CUDA {torch.version.cuda}"
    )
    if allow_cpu:
        out.warnings.append(msg + "; running on the CPU as asked (--allow-cpu): expect days")
    else:
        out.problems.append(msg + "; --allow-cpu runs on the CPU anyway (days)")
    return out


def preflight(
    p: Params,
    out_dir: Path | None,
    *,
    images_dir: Path | None,
    weights_dir: Path | None,
    metadata: Path | None,
    allow_cpu: bool = False,
    load_weights: bool = False,
    gpu: Callable[[], str | None] | None = None,
) -> Preflight:
    """Every check, every problem collected; nothing touches the GPU and nothing is written
    except a probe file in ``out_dir``. ``p`` (the params the run will use) gives the protocols,
    models and official-lists folder; the folders are passed as given (None = not given)."""
    result = Preflight()
    result.extend(check_metadata(metadata))
    skip: set[str] = set()
    if "nih-official" in p.data.protocols:
        lists_dir = Path(p.data.official_lists_dir) if p.data.official_lists_dir else None
        lists = check_official_lists(lists_dir)
        result.extend(lists)
        if lists.problems:
            skip.add("nih-official")
    try:
        needed = needed_image_ids(p, skip)
    except UserError as exc:
        result.problems.append(str(exc))
        needed = {}
    result.extend(check_images(images_dir, needed))
    result.extend(check_weights(p.models, weights_dir, load=load_weights))
    if out_dir is None:
        result.problems.append("output folder: not given (--out or $FAIRXRAY_OUT)")
    else:
        result.extend(check_out(out_dir))
    result.extend(check_gpu(allow_cpu, gpu))
    return result
