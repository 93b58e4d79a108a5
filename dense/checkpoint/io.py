"""Loading checkpoint files without executing code from them.

Released checkpoints are pickles, and a pickle can call any function while it loads. dense loads
them in two safe steps:

1. ``torch.load(weights_only=True)``: tensors, dicts, lists and primitives only.
2. If the file holds other objects (the DAT classification files hold a yacs config; timm
   checkpoints an argparse Namespace; mmcv files meta dicts), a restricted unpickler: objects of
   unknown classes become inert :class:`Placeholder` instances (their data is kept, no code of theirs
   runs), and a small allow-list of constructors (tensor rebuilding, OrderedDict, numpy arrays,
   datetime, ...) may be called. Any other call the pickle asks for is refused with
   :class:`UnsafeCheckpointError`, whose message names ``MODEL.WEIGHTS_TRUSTED`` / ``--trusted``:
   with that opt-in the file is loaded by plain ``torch.load(weights_only=False)``.
"""
from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import types
import zipfile
from typing import Any

import torch

__all__ = ["load_checkpoint_file", "UnsafeCheckpointError", "Placeholder"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle would call code outside dense's allow-list."""


class Placeholder(dict):
    """Inert stand-in for an object of a class dense does not import. Keeps the pickled data:
    dict items as items, list items in ``list_items``, the object state in ``state``."""

    _origin = "unknown"

    def __init__(self, *args: Any, **kwargs: Any):  # never called by the unpickler; for safety only
        super().__init__()
        self.list_items: list = []
        self.state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj.list_items, obj.state = [], None
        return obj

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Any) -> None:
        self.list_items.extend(items)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<Placeholder for {self._origin}>"

    def __reduce__(self):  # a placeholder is never re-pickled as the original class
        return (dict, (dict(self),))


_PLACEHOLDERS: dict[str, type] = {}


def _placeholder(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _PLACEHOLDERS:
        _PLACEHOLDERS[key] = type(name, (Placeholder,), {"_origin": key, "__module__": "dense.checkpoint.placeholders"})
    return _PLACEHOLDERS[key]


# Globals the restricted unpickler resolves to the real object. Those in _CALLABLE may be called by
# REDUCE / INST / OBJ opcodes; the others are data (classes used by NEWOBJ, dtypes, ...).
_CALLABLE = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "range"), ("_codecs", "encode"),
    ("copyreg", "_reconstructor"), ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"), ("torch", "Size"), ("torch", "device"),
    ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}
_TORCH_REBUILD_PREFIX = "_rebuild_"  # torch._utils._rebuild_tensor_v2, _rebuild_parameter, ...
_DATA = {("builtins", "object"), ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
         ("numpy", "ndarray"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter")}


def _resolve(module: str, name: str) -> Any:
    mod = __import__(module, fromlist=[name])
    return getattr(mod, name)


def _is_callable_allowed(module: str, name: str) -> bool:
    return (module, name) in _CALLABLE or (module == "torch._utils" and name.startswith(_TORCH_REBUILD_PREFIX))


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler lets us intercept opcodes
    """Only objects that ``find_class`` handed out as allow-listed callables may be called."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._callable_ids: set[int] = set()

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names in protocol-2 pickles (torch.save's default)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if _is_callable_allowed(module, name):
            obj = _resolve(module, name)
            self._callable_ids.add(id(obj))
            return obj
        if (module, name) in _DATA or (module.startswith("torch") and name.endswith("Storage")):
            return _resolve(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _placeholder(module, name)

    def _check_call(self, func: Any) -> None:
        if id(func) not in self._callable_ids:
            origin = func._origin if isinstance(func, type) and issubclass(func, Placeholder) else repr(func)
            raise UnsafeCheckpointError(origin)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        self._check_call(func)
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        klass = self.find_class(module, name)
        self._check_call(klass)
        self._instantiate(klass, self.pop_mark())

    dispatch[pickle.INST[0]] = load_inst

    def load_obj(self) -> None:
        args = self.pop_mark()
        cls = args.pop(0)
        self._check_call(cls)
        self._instantiate(cls, args)

    dispatch[pickle.OBJ[0]] = load_obj


_restricted_pickle = types.ModuleType("dense_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_restricted_pickle.__name__ = "pickle"  # torch.load checks pickle_module.__name__ for the legacy format


def zip_inner_checkpoint(z: zipfile.ZipFile, path: str) -> str | None:
    """The name of the one checkpoint file in archive ``z`` (read from ``path``), or None when ``z`` is a torch.save
    file itself (torch's own zip serialisation)."""
    names = z.namelist()
    if any(n.endswith("data.pkl") for n in names):
        return None
    inner = [n for n in names if n.endswith((".pth", ".pt", ".pth.tar", ".bin", ".ckpt"))]
    if len(inner) != 1:
        raise ValueError(f"Archive '{path}' should hold exactly one checkpoint file (.pth/.pt); "
                         f"found {inner or names[:10]}")
    return inner[0]


def _open_source(path: str) -> Any:
    """A path, or for a .zip archive that wraps a checkpoint (ViT-Adapter releases), its inner file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            inner = zip_inner_checkpoint(z, path)
            return path if inner is None else io.BytesIO(z.read(inner))
    return path


def load_checkpoint_file(path: str, trusted: bool = False) -> Any:
    """Load a checkpoint file onto the CPU without running code from it (see module docstring): torch.save files
    (zip or legacy), .zip archives wrapping one, and plain pickles (Detectron2 model-zoo .pkl: numpy arrays).

    ``trusted=True`` uses plain ``torch.load(weights_only=False)`` / ``pickle.load``: only for files you trust.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file '{path}' does not exist")
    src = _open_source(path)
    if not _is_plain_pickle(src):
        return _load_torch(src, path, trusted)
    with open(path, "rb") as f:
        if trusted:
            return pickle.load(f, encoding="latin1")
        try:
            return _RestrictedUnpickler(f, encoding="latin1").load()
        except UnsafeCheckpointError as e:
            raise _unsafe(path, e) from None


_TORCH_LEGACY_HEADER = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch.save's legacy format starts so


def _is_plain_pickle(src: Any) -> bool:
    """A file that pickle.dump wrote (not torch.save: neither its zip nor its legacy format)."""
    if not isinstance(src, str) or zipfile.is_zipfile(src):
        return False
    with open(src, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_HEADER))
    return head[:1] == b"\x80" and head != _TORCH_LEGACY_HEADER


def _load_torch(src: Any, path: str, trusted: bool) -> Any:
    if trusted:
        return torch.load(src, map_location="cpu", weights_only=False)
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if isinstance(src, io.BytesIO):
            src.seek(0)
    try:
        return torch.load(src, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except UnsafeCheckpointError as e:
        raise _unsafe(path, e) from None


def _unsafe(path: str, e: UnsafeCheckpointError) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"Refusing to load '{path}': its pickle would call {e.args[0]}(...) while loading, i.e. run code "
        f"from the file. dense only runs an allow-list of constructors for untrusted checkpoints. If you "
        f"trust this file, set MODEL.WEIGHTS_TRUSTED True (tools/convert_checkpoint.py: --trusted)."
    )
