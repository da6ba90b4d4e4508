"""Boundary checks: every public entry point converts its inputs here, so the C++ core below only
ever sees contiguous arrays of the right dtype, and bad input fails with an error naming the argument."""
from __future__ import annotations

import numbers

import numpy as np

try:  # torch is a dependency, but the store itself works on numpy alone
    import torch
except ImportError:  # pragma: no cover
    torch = None


def _is_tensor(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


_INT64 = np.dtype(np.int64)
_FLOAT32 = np.dtype(np.float32)


def as_ids(ids, name: str = "ids") -> np.ndarray:
    """A 1-D contiguous int64 numpy array (numpy, CPU torch tensor, or sequence of ints)."""
    if type(ids) is np.ndarray and ids.dtype is _INT64 and ids.ndim == 1 and ids.flags.c_contiguous:
        return ids  # already what the core takes: the per-step path skips the general checks
    if _is_tensor(ids):
        if ids.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU tensor here, got a tensor on {ids.device}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (int64), got {ids.dtype}")
        arr = ids.detach().to(torch.int64).numpy()
    else:
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            if arr.size == 0 and arr.dtype.kind == "f":
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"{name} must be an integer array (int64), got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds a value above the int64 range")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_values(values, name: str, length: int | None = None) -> np.ndarray:
    """A 1-D contiguous float32 numpy array of floating-point input (numpy or torch, any device)."""
    if (type(values) is np.ndarray and values.dtype is _FLOAT32 and values.ndim == 1 and values.flags.c_contiguous
            and (length is None or values.shape[0] == length)):
        return values
    if _is_tensor(values):
        if not values.dtype.is_floating_point:
            raise TypeError(f"{name} must be floating point, got {values.dtype}")
        arr = values.detach().to("cpu", torch.float32).numpy()
    else:
        arr = np.asarray(values)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be floating point, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} entries but ids has {length}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_count(value, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}, got {value}")
    return value


def as_ratio(value, name: str, *, upper_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


# Policy coefficients enter float32 score arithmetic (loss + beta * memory, mean + c * std): a
# coefficient past this bound would turn scores into inf, and then NaN. 1e6 weights a [0, 1] term
# a million times the loss and still leaves float32 headroom for memory terms up to ~1e32.
MAX_COEFFICIENT = 1e6
# Sampling weights are score ** alpha in float64: past 64 even a score of 1e5 overflows.
MAX_ALPHA = 64.0


def as_finite(value, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value:g}")
    return value


def as_ema_decay(value) -> float:
    """The running mean/variance decay: a finite number in [0, 1)."""
    if type(value) is float and 0.0 <= value < 1.0:
        return value
    decay = as_finite(value, "ema_decay", minimum=0.0)
    if decay >= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    return decay


def as_nonfinite_mode(value) -> str:
    """What an update does with NaN/inf values: 'raise' or 'skip'."""
    if value not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {value!r}")
    return value
