"""Image glue for Debian's CPU build of PyTorch, which is built without libuv.

torch's `TCPStore` (the store behind torchrun's static and c10d rendezvous) asks for the libuv backend
unless told otherwise, and a build without libuv refuses ("use_libuv was requested but PyTorch was build
without libuv support"); torchrun offers no switch for it. This module, loaded at interpreter start by
llamaop_torch_glue.pth, waits for `torch.distributed` to be imported and, just before, makes TCPStore
default to `use_libuv=False` (USE_LIBUV=1 asks for libuv again). Nothing else changes; PyPI's torch
(the Dockerfile's) has libuv and needs none of this.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_USE_LIBUV_POSITION = 8  # host, port, world_size, is_master, timeout, wait_for_workers, multi_tenant, fd


def _patch() -> None:
    c10d = getattr(sys.modules.get("torch._C"), "_distributed_c10d", None)
    if c10d is None or getattr(c10d.TCPStore, "_llamaop_glue", False):
        return
    base: Any = c10d.TCPStore

    class TCPStore(base):  # type: ignore[misc, valid-type]
        _llamaop_glue = True
        __doc__ = base.__doc__

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if len(args) <= _USE_LIBUV_POSITION:
                kwargs.setdefault("use_libuv", os.environ.get("USE_LIBUV", "0") == "1")
            super().__init__(*args, **kwargs)

    TCPStore.__name__ = TCPStore.__qualname__ = "TCPStore"
    TCPStore.__module__ = base.__module__
    c10d.TCPStore = TCPStore


class _Finder(importlib.abc.MetaPathFinder):
    """When `torch.distributed` is about to be imported, hooks `torch._C._c10d_init`, which its
    __init__ calls to create torch._C._distributed_c10d before importing TCPStore from it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "torch.distributed":
            return None
        sys.meta_path.remove(self)
        torch_c = sys.modules.get("torch._C")
        c10d_init = getattr(torch_c, "_c10d_init", None)
        if c10d_init is not None:

            def init() -> bool:
                ok = bool(c10d_init())
                _patch()
                return ok

            torch_c._c10d_init = init  # type: ignore[union-attr]
        return None


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
