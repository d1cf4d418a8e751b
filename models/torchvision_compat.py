"""The one place that makes ``import torchvision`` work next to the CPU build of torch.

The torchvision wheel on the package registry is a CUDA build whose compiled
extension cannot load against ``torch==2.13.0+cpu``. Its Python side still
imports fine, except that ``torchvision._meta_registrations`` registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally and
fails when those operator schemas do not exist (its other registrations are
skipped when the extension is missing). open_clip imports torchvision (for its image transforms only), so before
the first import we declare the schema ourselves when -- and only when -- the
operator is missing. On a machine whose torchvision extension loads (the GPU
image), the real schema exists and this does nothing.
"""

from __future__ import annotations

import torch

_LIB: torch.library.Library | None = None


def ensure_torchvision_importable() -> None:
    """Declare ``torchvision::nms`` if no torchvision extension has registered it."""
    global _LIB
    if _LIB is not None:
        return
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "Meta")
        return  # the schema exists: a working torchvision extension is loaded
    except RuntimeError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB = lib  # the schemas live as long as this Library object


ensure_torchvision_importable()
