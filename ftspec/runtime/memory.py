"""Giving back what a finished step held before the next one starts.

Every step of a run shares the `ftspec run` process. What training allocated (the trainer,
its optimizer state, the model it trained, accelerate's state) is garbage once the recipe
returns, but it sits in reference cycles until Python's collector runs, and the C allocator
keeps freed heap pages for the process rather than returning them; the steps after it (the
tuned model loaded and scored) then add their peak on top of training's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import torch


def release() -> None:
    """Collect what no one refers to any more and return the freed memory to the system."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim()


def _trim() -> None:
    # glibc only (Linux): malloc_trim hands the heap's free pages back; elsewhere there is nothing to do.
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
