"""Input checks shared by the reference models: one wording for one mistake, wherever it is made."""

from __future__ import annotations

import torch


def check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    """``value`` (the setting ``name``) must split into ``by`` equal parts (the setting ``by_name``), e.g. heads."""
    if value % by:
        raise ValueError(f"{name} ({value}) must be divisible by {by_name} ({by})")


def check_choice(name: str, value, choices) -> None:
    """``value`` (the setting ``name``) must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_token_id(name: str, token_id: int, vocab_size: int) -> None:
    """A single special token id (padding, mask, end of text) must lie in the vocabulary."""
    if not 0 <= token_id < vocab_size:
        raise ValueError(f"{name} must lie in [0, vocab_size={vocab_size}), got {token_id}")


def check_token_ids(name: str, ids, high: int, *, shape: tuple[int, ...] | None = None, low: int = 0,
                    ignore: int | None = None, max_length: int | None = None, length_limit: str = "",
                    allow_empty: bool = False) -> None:
    """``ids`` must be an integer tensor of token ids with values in ``[low, high)`` (or equal to ``ignore``).

    Args:
        shape: the exact shape expected; default any ``(B, N)``.
        max_length / length_limit: at most this many tokens per row, and the config field that sets it.
        allow_empty: accept ``N == 0`` (e.g. a prompt made only of a prefix).
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must be an integer tensor of token ids, got {ids.dtype}")
    if shape is not None and tuple(ids.shape) != tuple(shape):
        expected = "(B, N)" if len(shape) == 2 else "(B,)"
        raise ValueError(f"{name} must have shape {expected} = {tuple(shape)}, got {tuple(ids.shape)}")
    if shape is None and (ids.dim() != 2 or (ids.shape[1] == 0 and not allow_empty)):
        raise ValueError(f"{name} must have shape (B, N) with N >= 1, got {tuple(ids.shape)}")
    if max_length is not None and ids.dim() == 2 and ids.shape[1] > max_length:
        raise ValueError(f"{name} has {ids.shape[1]} tokens, more than {length_limit or 'the limit'} ({max_length})")
    valid = (ids >= low) & (ids < high)
    if ignore is not None:
        valid |= ids == ignore
    if not bool(valid.all()):
        bad = ids[~valid][0].item()
        also = f" or equal {ignore}" if ignore is not None else ""
        raise ValueError(f"{name} must lie in [{low}, {high}){also}, got {bad}")


def check_float_tensor(name: str, t, shape: str) -> None:
    """``t`` must be a floating-point tensor with as many dimensions as ``shape`` (e.g. ``"(B, H, N, D)"``) names."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.dim() != shape.count(",") + 1:
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(t.shape)}")


def check_matrix_pair(name_a: str, a, name_b: str, b, *, columns: str, same_dtype: bool) -> None:
    """``a`` and ``b`` must be floating ``(B, columns)`` tensors of one shape (and one dtype if ``same_dtype``)."""
    for name, t in ((name_a, a), (name_b, b)):
        check_float_tensor(name, t, f"(B, {columns})")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape (B, {columns}), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if same_dtype and a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must share a dtype, got {a.dtype} and {b.dtype}")


def check_images(name: str, images, num_channels: int) -> None:
    """Raise unless ``images`` is a floating-point ``(B, num_channels, H, W)`` tensor, naming the argument."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != num_channels:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must have shape (B, num_channels={num_channels}, H, W), got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {images.dtype}")
