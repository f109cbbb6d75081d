"""Read tensors out of torch zip archives without executing anything they reference.

Two upstream formats are not readable with ``torch.load(weights_only=True)``: OpenAI's CLIP
TorchScript archives (``ViT-B-32.pt``) and Lightning checkpoints holding OmegaConf objects
(GLoRIA). Both are zip files with a ``data.pkl`` pickle whose tensors live in ``data/<key>``
entries. This reader unpickles ``data.pkl`` with an allow-list: tensors are rebuilt from the raw
storage bytes, ``OrderedDict`` is allowed, and every other class or function the pickle names
becomes an inert :class:`Stub` that only records its arguments and state. No module is imported
and no callable from the file is ever invoked, so it is as safe as ``weights_only=True``.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fairxray.errors import UserError

_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class Stub:
    """Stands in for any class or function the pickle names; holds what it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # Some pickles BUILD through __setitem__ / append (dict and list subclasses).
    def __setitem__(self, key: Any, value: Any) -> None:
        self.kwargs[key] = value

    def append(self, value: Any) -> None:
        self.args = (*self.args, value)

    def extend(self, values: Any) -> None:
        self.args = (*self.args, *values)


def _stub_type(module: str, name: str) -> type:
    return type(name, (Stub,), {"__module__": f"stub.{module}"})


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._zip = archive
        self._root = root
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _DTYPES:
            return _StorageType(_DTYPES[name])
        return _stub_type(module, name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        # ('storage', storage_type, key, location, numel): a flat tensor over the raw bytes.
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UserError(f"unsupported persistent id in archive: {pid!r}")
        stype, key = pid[1], str(pid[2])
        if not isinstance(stype, _StorageType):
            # Reading unknown bytes as some dtype would give silently wrong tensors.
            name = getattr(stype, "__name__", repr(stype))
            raise UserError(
                f"storage type {name!r} is not one the tensors-only reader knows "
                f"({', '.join(sorted(_DTYPES))})"
            )
        dtype = stype.dtype
        if key not in self._storages:
            raw = bytearray(self._zip.read(f"{self._root}/data/{key}"))
            self._storages[key] = (
                torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            )
        return self._storages[key]


def read_archive(path: str | Path) -> Any:
    """The object tree of a torch zip archive (``torch.save`` or TorchScript), tensors real,
    everything else :class:`Stub`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path}: not a torch zip archive (legacy pre-1.6 pickle format is not read safely)"
        )
    with zipfile.ZipFile(path) as z:
        pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise UserError(f"{path}: expected one <root>/data.pkl in the archive, found {pkls}")
        root = pkls[0].split("/")[0]
        return _RestrictedUnpickler(z.read(pkls[0]), z, root).load()


def _module_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    state = obj.state if isinstance(obj, Stub) else obj
    if not isinstance(state, dict):
        return
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[prefix + str(k)] = v
        elif isinstance(v, Stub):
            _module_tensors(v, f"{prefix}{k}.", out, seen)


def jit_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript module tree, keyed like ``state_dict()``.

    TorchScript also pickles plain tensor attributes and non-persistent buffers (e.g. CLIP's
    ``attn_mask``); callers drop those by name before a strict load.
    """
    root = read_archive(path)
    if not isinstance(root, Stub):
        raise UserError(f"{path}: not a TorchScript module archive")
    out: dict[str, torch.Tensor] = {}
    _module_tensors(root, "", out, set())
    return out
