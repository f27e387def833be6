"""Records every window an app's model is called on, for the cross-architecture tier (host runs only).

Python imports this module at start-up when its folder is on PYTHONPATH. With ARMGATE_RECORD_WINDOWS set
to a folder, `torch.jit.load` hands the app a thin wrapper of the module it loaded: each call's inputs
are saved, one window per file (window-NNNN.pt, in call order), with a few facts of the model's answer
for that window (window-NNNN.json: voxels whose argmax is not the background, voxels whose two highest
logits are within each tie width, the input's share of exact zeros, where sliding-window inference pads).
The model's own computation is untouched: the wrapper calls it and returns what it returned. Without the
variable nothing is imported or changed.
"""

import json
import os

_FOLDER = os.environ.get("ARMGATE_RECORD_WINDOWS")
_TIE_WIDTHS = (1e-4, 1e-3, 1e-2)


def _facts(window, output):
    import torch

    facts = {"input_zeros": float((window == 0).float().mean())}
    if isinstance(output, torch.Tensor) and output.dim() >= 2 and output.shape[1] > 1:
        top = torch.topk(output.float(), 2, dim=1).values
        gap = top[:, 0] - top[:, 1]
        facts["foreground"] = int((output.argmax(dim=1) != 0).sum())
        facts["ties"] = {str(width): int((gap < width).sum()) for width in _TIE_WIDTHS}
        facts["min_gap"] = float(gap.min())
    return facts


class _Recording:
    """The loaded module, its calls recorded; everything else is the module's."""

    def __init__(self, module):
        self._module = module
        self._count = 0

    def __call__(self, *args, **kwargs):
        output = self._module(*args, **kwargs)
        try:
            self._record(args[0], output)
        except Exception as error:  # recording must never change what the app does
            print(f"armgate window recorder: not recorded: {error}", flush=True)
        return output

    def _record(self, batch, output):
        import torch

        for item in range(int(batch.shape[0])):
            stem = os.path.join(_FOLDER, f"window-{self._count:04d}")
            window = batch[item : item + 1].detach().cpu().contiguous()
            answer = output[item : item + 1] if isinstance(output, torch.Tensor) else None
            torch.save(window.clone(), stem + ".pt")
            with open(stem + ".json", "w") as handle:
                json.dump(_facts(window, answer), handle)
            self._count += 1

    def eval(self):
        self._module.eval()
        return self

    def to(self, *args, **kwargs):
        self._module.to(*args, **kwargs)
        return self

    def __getattr__(self, name):
        return getattr(self._module, name)


if _FOLDER:
    import torch

    _load = torch.jit.load

    def _recording_load(*args, **kwargs):
        return _Recording(_load(*args, **kwargs))

    torch.jit.load = _recording_load
