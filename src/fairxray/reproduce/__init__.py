"""``fairxray reproduce`` / ``fairxray demo``: the preflight of real inputs
(:mod:`.checks`) and the self-contained run folder (:mod:`.run`).

The names below load on first use: ``fairxray reproduce --help`` imports only :mod:`.names`."""

import importlib

__all__ = [
    "checks",
    "run",
    "ENV_IMAGES_DIR",
    "ENV_WEIGHTS_DIR",
    "ENV_METADATA",
    "ENV_OUT",
    "METADATA_NAME",
    "OFFICIAL_LISTS",
    "PNG_SIGNATURE",
    "MAX_EXAMPLES",
    "Preflight",
    "require_ok",
    "table_sha256",
    "reference_metadata",
    "find_metadata",
    "check_metadata",
    "needed_image_ids",
    "check_images",
    "find_official_lists",
    "check_official_lists",
    "check_weights",
    "check_out",
    "cuda_device",
    "check_gpu",
    "preflight",
    "PIPELINE_FILES",
    "project_root",
    "profiled_params",
    "dvc_executable",
    "ENV_GIT_SHA",
    "project_commit",
    "run_env",
    "write_run_record",
    "prepare_run_dir",
    "run_pipeline",
    "summary",
    "parse_sets",
    "reproduce",
    "demo",
]


def __getattr__(name: str):
    if name in ("checks", "run", "names"):
        return importlib.import_module(f"fairxray.reproduce.{name}")
    if name in __all__:
        for module in ("names", "checks", "run"):
            mod = importlib.import_module(f"fairxray.reproduce.{module}")
            if hasattr(mod, name):
                return getattr(mod, name)
    raise AttributeError(f"module 'fairxray.reproduce' has no attribute {name!r}")
