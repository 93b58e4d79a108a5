"""dense: unified dense prediction with modern attention backbones (Detectron2 programming model)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``dense.Predictor`` and ``dense.model_zoo``, imported on first use (``import dense`` stays light)."""
    if name == "Predictor":
        from .engine import Predictor

        return Predictor
    if name == "model_zoo":
        import importlib

        return importlib.import_module(".model_zoo", __name__)
    raise AttributeError(f"module 'dense' has no attribute '{name}'")
