"""BEiT relative position bias tables at another token grid: BEiT's geometric-progression cubic spline.

BEiT (and ViT-Adapter's BEiT backbones) learn a table of biases per relative displacement on the training token
grid. Fine-tuned at another resolution, upstream enlarges the table with SciPy's ``interp2d(kind='cubic')`` through
nodes spaced by a geometric progression (unilm / ViT-Adapter ``load_checkpoint``). SciPy's interp2d is gone; this
module computes the same interpolant in torch, as a matrix per axis (equal to SciPy's to < 1e-10): used when a
checkpoint of another resolution is loaded and at run time for inputs other than the training crop.

A square table has (2w-1)^2 rows (one per displacement of a w x w grid, row-major) and, in the global
(segmentation) form, CLS_ENTRIES more for the class token; columns are heads.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = ["rel_pos_resample_matrix", "resample_table_2d", "resize_rel_pos_table", "CLS_ENTRIES"]

CLS_ENTRIES = 3  # BEiT tables end with cls->token, token->cls and cls->cls biases


def _geometric_nodes(src: int, dst: int) -> list[float]:
    """Positions of the ``src`` table entries along one axis on the ``dst`` axis, as BEiT places them when
    enlarging a table (unilm / ViT-Adapter ``load_checkpoint``): spacing grows geometrically from the centre,
    so short displacements keep their bias and long ones are stretched to reach +-(dst // 2)."""

    def progression(r: float, n: int) -> float:
        return (1.0 - r**n) / (1.0 - r)

    left, right = 1.01, 1.5
    while right - left > 1e-6:  # upstream's bisection; the ratio used is the last midpoint
        q = (left + right) / 2.0
        if progression(q, src // 2) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0.0] + dis


def _cubic_spline_matrix(nodes: Sequence[float], targets: torch.Tensor) -> torch.Tensor:
    """[len(targets), len(nodes)] float64: row t gives the not-a-knot interpolating cubic spline through
    (nodes, y) at targets[t] as weights on y. This is FITPACK's s=0 cubic interpolant (knots at the interior
    nodes except the second and the second-to-last), i.e. one axis of scipy's RectBivariateSpline(kx=3, ky=3)
    and interp2d(kind='cubic'); targets outside the nodes are clamped to the end nodes, as FITPACK does."""
    x = torch.as_tensor(nodes, dtype=torch.float64)
    n = x.numel()
    if n < 4:
        raise ValueError(f"a cubic spline needs at least 4 nodes, got {n}")
    t = targets.to(torch.float64).clamp(x[0], x[-1])
    h = x[1:] - x[:-1]
    # second derivatives M = A^-1 D y: continuity of M' at every interior node, of M'' at the 2nd and 2nd-last
    a = torch.zeros(n, n, dtype=torch.float64)
    d = torch.zeros(n, n, dtype=torch.float64)
    a[0, :3] = torch.stack([h[1], -(h[0] + h[1]), h[0]])
    a[-1, -3:] = torch.stack([h[-1], -(h[-2] + h[-1]), h[-2]])
    for i in range(1, n - 1):
        a[i, i - 1:i + 2] = torch.stack([h[i - 1], 2 * (h[i - 1] + h[i]), h[i]])
        d[i, i - 1:i + 2] = torch.stack([6 / h[i - 1], -6 / h[i - 1] - 6 / h[i], 6 / h[i]])
    m = torch.linalg.solve(a, d)
    j = (torch.searchsorted(x, t, right=True) - 1).clamp(0, n - 2)
    hj, left, right = h[j], x[j + 1] - t, t - x[j]
    eye = torch.eye(n, dtype=torch.float64)
    return (m[j] * ((left**3 / (6 * hj) - hj * left / 6)[:, None])
            + m[j + 1] * ((right**3 / (6 * hj) - hj * right / 6)[:, None])
            + eye[j] * (left / hj)[:, None] + eye[j + 1] * (right / hj)[:, None])


@functools.lru_cache(maxsize=64)
def rel_pos_resample_matrix(src: int, dst: int) -> torch.Tensor:
    """[dst, src] float64 CPU matrix taking one axis of a relative position table with ``src`` entries
    (displacements -(src // 2)..src // 2) to ``dst`` entries: identity when equal, the centre ``dst`` entries
    when smaller (the displacements a smaller grid has, exactly), BEiT's geometric-progression cubic spline
    when larger."""
    if src % 2 == 0 or dst % 2 == 0:
        raise ValueError(f"relative position tables have an odd number of entries per axis, got {src} -> {dst}")
    if dst <= src:
        return torch.eye(src, dtype=torch.float64)[(src - dst) // 2:(src + dst) // 2]
    t = dst // 2
    return _cubic_spline_matrix(_geometric_nodes(src, dst), torch.arange(-t, t + 1, dtype=torch.float64))


@functools.lru_cache(maxsize=8)
def _matrix_bank(src: int, max_dst: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[K, max_dst, src]: entry k holds :func:`rel_pos_resample_matrix` (src, 2k + 1), zero rows below. One object
    per arguments, so a program holds it once, however many blocks read it."""
    bank = torch.zeros((max_dst + 1) // 2, max_dst, src, dtype=torch.float64)
    for k in range(bank.shape[0]):
        bank[k, :2 * k + 1] = rel_pos_resample_matrix(src, 2 * k + 1)
    return bank.to(device, dtype)


def _axis_matrix(src: int, dst, like: torch.Tensor) -> torch.Tensor:
    """[dst, src] matrix of one axis, in ``like``'s dtype and device. Under torch.export with a dynamic ``dst``
    (a SymInt: the spline's nodes come from a bisection on Python floats, which no program can follow) it is read
    from the matrices of every size ``dst`` can take, bounded by the export's maximum size, held as one constant."""
    if not isinstance(dst, torch.SymInt):
        # (a trace must not cache its fake tensors)
        matrix = rel_pos_resample_matrix.__wrapped__ if torch.compiler.is_compiling() else rel_pos_resample_matrix
        return matrix(src, dst).to(like.device, like.dtype)
    from torch.utils._sympy.numbers import int_oo

    upper = dst.node.shape_env.bound_sympy(dst.node.expr).upper
    if upper == int_oo or not upper.is_Integer:
        raise ValueError("BEiT's relative position bias at a dynamic size needs a bounded one: give the dynamic "
                         "dimensions a max (dense.export.export_program's max_size does)")
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch._C.DisableTorchFunction():  # real values, outside the trace: a constant
        bank = _matrix_bank(src, int(upper), like.dtype, like.device)
    return bank[(dst - 1) // 2, :dst]


def resample_table_2d(core: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[R, C, heads] table -> [rows, cols, heads] (separable: one spline per axis)."""
    return torch.einsum("ir,rch,jc->ijh", _axis_matrix(core.shape[0], rows, core), core,
                        _axis_matrix(core.shape[1], cols, core))


def _table_layout(num_rows: int) -> tuple[int, int]:
    """(entries per axis, cls entries) of a square relative position table with ``num_rows`` rows."""
    for extra in (0, CLS_ENTRIES):
        side = math.isqrt(num_rows - extra)
        if side * side == num_rows - extra and side % 2 == 1:
            return side, extra
    raise ValueError(f"a relative position table with {num_rows} rows is neither (2w-1)^2 nor (2w-1)^2 + 3")


def resize_rel_pos_table(table: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Resize a square [rows, heads] BEiT table to ``num_rows`` rows, as upstream does when fine-tuning at
    another resolution (geometric-progression cubic spline; SciPy's interp2d, which upstream used, is gone):
    the cls entries are kept when the destination has them, dropped when it is a windowed table without."""
    src_side, src_extra = _table_layout(table.shape[0])
    dst_side, dst_extra = _table_layout(num_rows)
    if dst_extra > src_extra:
        raise ValueError(f"cannot resize a relative position table without class-token entries ({table.shape[0]} "
                         f"rows) to one with them ({num_rows} rows)")
    heads = table.shape[1]
    core = table[:src_side * src_side].reshape(src_side, src_side, heads)
    core = resample_table_2d(core.double(), dst_side, dst_side).to(table.dtype).reshape(-1, heads)
    return torch.cat([core, table[src_side * src_side:]]) if dst_extra else core
