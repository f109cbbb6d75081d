"""Model zoo: the registry and every family. Importing this package registers all families.

Use :func:`create`, :func:`get_spec`, :func:`list_models` and :func:`weights_status`; never branch
on model names outside the family modules.
"""

from fairxray.models import biomedclip, gloria, medclip, openclip, toy  # noqa: F401  (registers)
from fairxray.models.base import ClipModel
from fairxray.models.registry import (
    ImageSpec,
    ModelSpec,
    WeightsStatus,
    create,
    get_spec,
    list_models,
    register,
    require_weights,
    weights_status,
)

__all__ = [
    "ClipModel",
    "ImageSpec",
    "ModelSpec",
    "WeightsStatus",
    "create",
    "get_spec",
    "list_models",
    "register",
    "require_weights",
    "weights_status",
]
