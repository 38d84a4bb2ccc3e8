"""A cache keyed by its arguments' values, for work done per model in a process (a traced and
compiled Grad-CAM function, a model's feature widths): ``functools.lru_cache`` where the
arguments hash, a plain call where one does not (a Flax module of the user's with a list or
dict field: ``TypeError: unhashable type``), so that caching never refuses a model."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable)


_CLEARS: list[Callable[[], None]] = []  # every cache_where_hashable cache's cache_clear (clear)


def clear() -> None:
    """Empties every cache of :func:`cache_where_hashable` in this process: the programs of
    ``make_train_step``, ``make_eval_step``, ``train_state_program`` and ``make_cam_fn`` are
    then built (traced, lowered, compiled) anew at their next use. For a function or constant
    patched into the library after a program that calls it was built (the program keeps what it
    traced, as ``jax.jit`` does): clear after patching, and again after undoing the patch."""
    for clear_one in _CLEARS:
        clear_one()


def cache_where_hashable(maxsize: int) -> Callable[[T], T]:
    """Decorator: ``functools.lru_cache(maxsize)`` for calls whose arguments hash; a call with
    an unhashable one runs the function itself, uncached. Only the arguments' hash is tried:
    a TypeError raised inside the function propagates once, not retried uncached. The wrapper
    keeps ``cache_info`` and ``cache_clear``; :func:`clear` empties every such cache."""

    def decorate(fn: T) -> T:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                hash((args, tuple(kwargs.items())))
            except TypeError:
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        call.cache_info, call.cache_clear = cached.cache_info, cached.cache_clear
        _CLEARS.append(cached.cache_clear)
        return call  # type: ignore[return-value]

    return decorate
