"""`prepare`: NIH metadata -> ``data/splits/<protocol>/{train,val,test}.parquet`` + ``manifest.json``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from fairxray import paths
from fairxray.config import Params
from fairxray.data import chexpert, mimic, nih  # noqa: F401  (chexpert, mimic register)
from fairxray.data.manifest import manifest_sha256  # noqa: F401  (the studies' and runs' data key)
from fairxray.data.registry import DatasetSpec, Loaded, for_protocol, register
from fairxray.data.tables import label_column, portable_path
from fairxray.errors import UserError
from fairxray.hashing import sha256_file

# The data params a protocol's splits depend on (dvc.yaml's `prepare` lists the same keys).
SPLIT_PARAMS = (
    "metadata",
    "official_lists_dir",
    "classes",
    "age_bins",
    "per_cell",
    "n_val",
    "n_test",
    "seed",
    "official_val_fraction",
    "demo_official_images",
)
# Split params only one protocol reads: left out of the other protocols' manifests (so that their
# manifest, the data identity of every run on them, is unchanged by a key they do not read) and
# recorded in that protocol's own manifest section.
PROTOCOL_ONLY = {"demo_official_images": "nih-demo-official"}


# How the manifest names torchxrayvision's copy of the metadata (never its install path).
BUNDLED = "torchxrayvision:data/Data_Entry_2017_v2020.csv.gz"


def design(p: Params) -> nih.Design:
    d = p.data
    return nih.Design(d.classes, d.age_bins, d.per_cell, d.n_val, d.n_test, d.seed)


def make_splits(
    p: Params, protocol: str, meta: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], dict]:
    """The protocol's splits and the protocol-specific part of the manifest."""
    extra: dict = {}
    if protocol == "nih6x200-paper":
        splits = nih.protocol_paper(meta, design(p))
    elif protocol == "nih6x200-clean":
        splits, shortfall = nih.protocol_clean(meta, design(p))
        extra["shortfall"] = shortfall
        extra["shortfall_total"] = sum(r["shortfall"] for r in shortfall)
    elif protocol == "nih-official":
        if p.data.official_lists_dir is None:
            raise UserError(
                "nih-official needs data.official_lists_dir: a folder with NIH's train_val_list.txt "
                "and test_list.txt (from the NIH ChestX-ray14 download)"
            )
        splits = nih.protocol_official(
            meta,
            Path(p.data.official_lists_dir),
            p.data.age_bins,
            p.data.official_val_fraction,
            p.data.seed,
            p.data.classes,
        )
    elif protocol == "nih-demo-official":
        splits, extra["demo"] = nih.protocol_demo_official(
            meta,
            p.data.age_bins,
            p.data.official_val_fraction,
            p.data.seed,
            p.data.classes,
            p.data.demo_official_images,
        )
    else:
        raise UserError(f"unknown protocol '{protocol}'; known: {', '.join(nih.PROTOCOLS)}")
    return splits, extra


def check_classes(p: Params, meta: pd.DataFrame, source: Path) -> None:
    """Every ``data.classes`` entry must be a label that occurs in the metadata: a misspelled
    class would otherwise become a phantom, empty class."""
    present = set(meta["labels"].str.split("|").explode())
    unknown = [c for c in p.data.classes if c not in present]
    if unknown:
        known = ", ".join(sorted(present - {nih.NO_FINDING}))
        raise UserError(
            f"{p.source}: 'data.classes' has {', '.join(repr(c) for c in unknown)}, not a label of "
            f"{source} (its labels: {known})"
        )


MIN_PER_CLASS = 1  # rows of each class every split of a 6x200 protocol must hold


def check_splits(p: Params, protocol: str, splits: dict[str, pd.DataFrame], source: Path) -> None:
    """Every split must have rows, and train and val every class (test too in the 6x200
    designs): a too-small metadata file fails here, not in a later stage."""
    problems = [f"{name} is empty" for name, df in splits.items() if df.empty]
    if protocol not in nih.OFFICIAL:
        for name, df in splits.items():
            counts = df["label"].value_counts() if not df.empty else pd.Series(dtype=int)
            short = [c for c in p.data.classes if counts.get(c, 0) < MIN_PER_CLASS]
            if short and not df.empty:
                problems.append(f"{name} has no row of {', '.join(short)}")
    else:
        for name in ("train", "val"):
            df = splits[name]
            absent = [c for c in nih.TARGETS if not df.empty and df[label_column(c)].sum() == 0]
            if absent:
                problems.append(f"{name} has no positive of {', '.join(absent)}")
    if problems:
        rows = {k: len(v) for k, v in splits.items()}
        raise UserError(
            f"{source}: too few rows for protocol {protocol} (rows {rows}): "
            + "; ".join(problems)
            + " (a metadata file this small cannot be split; check data.metadata)"
        )


def prepare(p: Params, protocol: str, out_dir: Path | None = None) -> dict:
    """Validate the metadata, build the protocol's splits, write them atomically; return the manifest."""
    out_dir = out_dir or paths.splits(protocol)
    dataset = for_protocol(protocol)
    loaded = dataset.read(p)
    splits, extra = dataset.make_splits(p, protocol, loaded.frame)
    manifest = {
        "protocol": protocol,
        "metadata": loaded.source,
        "params": dataset.split_params(p),
        "age_groups": nih.age_group_labels(p.data.age_bins),
        "rows": {k: int(len(v)) for k, v in splits.items()},
        "patients": {k: int(v["patient_id"].nunique()) for k, v in splits.items()},
        "leakage": nih.leakage(splits),
        **extra,
        "cells": dataset.cells(splits),
    }
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, df in splits.items():
        df.to_parquet(tmp / f"{name}.parquet", index=False)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return manifest


def _read_nih(p: Params) -> Loaded:
    source = nih.metadata_path(p.data.metadata)
    meta = nih.read_metadata(source)
    where = portable_path(source) if p.data.metadata is not None else BUNDLED
    return Loaded(meta, {"path": where, "sha256": sha256_file(source), "rows": len(meta)})


def _nih_splits(p: Params, protocol: str, meta: pd.DataFrame):
    """NIH's splits, validated: known classes, and enough rows of each in every split."""
    source = nih.metadata_path(p.data.metadata)
    check_classes(p, meta, source)
    splits, extra = make_splits(p, protocol, meta)
    check_splits(p, protocol, splits, source)
    return splits, extra


def _nih_split_params(p: Params) -> dict:
    keys = set(SPLIT_PARAMS) - set(PROTOCOL_ONLY)
    split_params = {k: v for k, v in dataclasses.asdict(p.data).items() if k in keys}
    for key in ("metadata", "official_lists_dir"):
        split_params[key] = portable_path(split_params[key])
    return split_params


NIH = register(
    DatasetSpec(
        name="nih",
        protocols=nih.PROTOCOLS,
        sensitive=("age_group", "sex"),
        labels=nih.NIH_LABELS,
        read=_read_nih,
        make_splits=_nih_splits,
        split_params=_nih_split_params,
        cells=nih.cell_counts,
    )
)


def load_splits(protocol: str, drop_skipped: bool = True) -> dict[str, pd.DataFrame]:
    """The protocol's split frames. Rows whose image the `images` stage skipped
    (``images.on_error: skip``: missing or corrupt file) are dropped here, once for every
    downstream stage, with a warning naming how many; ``drop_skipped=False`` returns all rows."""
    import sys

    from fairxray.data.cache import read_skipped

    folder = paths.splits(protocol)
    if not (folder / "manifest.json").exists():
        raise UserError(
            f"{folder}: no splits for protocol '{protocol}'; run `fairxray prepare --protocol {protocol}`"
        )
    frames = {s: pd.read_parquet(paths.split_file(protocol, s)) for s in paths.SPLITS}
    skipped = read_skipped(paths.images(protocol)) if drop_skipped else set()
    for name, df in frames.items():
        keep = ~df["image_id"].isin(skipped)
        if not keep.all():
            print(
                f"warning: {protocol}/{name}: {int((~keep).sum())} row(s) dropped, their images "
                f"were skipped by `fairxray images` (see {paths.images(protocol)}/manifest.json)",
                file=sys.stderr,
            )
            frames[name] = df[keep].reset_index(drop=True)
    return frames


