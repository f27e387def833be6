"""An image's numerics changed on purpose, to show that the cross-architecture tier catches it: every
model its Python loads with torch.jit.load has its last weight scaled by ARMGATE_PERTURB_SCALE
(default 1.01). Installed in a derived image on PYTHONPATH; the host's model file is untouched."""

import os

import torch

_load = torch.jit.load
SCALE = float(os.environ.get("ARMGATE_PERTURB_SCALE", "1.01"))


def _perturbed(*args, **kwargs):
    module = _load(*args, **kwargs)
    weight = [p for name, p in module.named_parameters() if name.endswith("weight")][-1]
    with torch.no_grad():
        weight.mul_(SCALE)
    return module


torch.jit.load = _perturbed
