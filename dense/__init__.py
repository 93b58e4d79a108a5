"""dense: unified dense prediction with modern attention backbones (Detectron2 programming model)."""

__version__ = "0.1.0"
