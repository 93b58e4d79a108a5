"""DatasetCatalog (name -> function returning list[dict]) and MetadataCatalog (name -> Metadata)."""
from __future__ import annotations

import types
from collections import UserDict
from typing import Any, Callable

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


class _DatasetCatalog(UserDict):
    """Global registry of datasets. ``register(name, func)`` where ``func()`` returns a list of dicts
    in dense's dataset format (``file_name``, ``height``, ``width``, ``sem_seg_file_name``,
    ``annotations``, ...). The function is only called when the dataset is used."""

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        assert callable(func), "DatasetCatalog.register needs a function returning a list of dicts"
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered")
        self[name] = func

    def get(self, name: str) -> list[dict]:
        if not isinstance(name, str):
            raise TypeError(f"Dataset names must be strings, got {name!r}")
        if name not in self:
            raise KeyError(
                f"Dataset '{name}' is not registered. Registered datasets: {', '.join(sorted(self))}. "
                f"DATASETS.TRAIN/TEST take a list of names, e.g. DATASETS.TRAIN \"('synthetic_sem_seg_train',)\""
            )
        return self[name]()

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Dataset-level facts: ``stuff_classes``, ``stuff_colors``, ``thing_classes``, ``ignore_label``,
    ``evaluator_type``, ``json_file``, ... Attributes can be set once; setting a different value raises."""

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {list(self.__dict__)}"
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key in self.__dict__ and self.__dict__[key] != val:
            raise AssertionError(
                f"Metadata '{key}' of dataset '{self.name}' cannot be changed from {self.__dict__[key]!r} to {val!r}"
            )
        super().__setattr__(key, val)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)


class _MetadataCatalog(UserDict):
    """name -> Metadata; ``get(name)`` creates an empty Metadata on first use."""

    def get(self, name: str) -> Metadata:
        assert len(name)
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()
