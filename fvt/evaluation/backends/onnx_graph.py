"""The fp32 ONNX graph of a model, from one of PyTorch's two exporters.

``dynamo``: ``torch.onnx.export(..., dynamo=True)``, which captures the model with torch.export (the
exporter PyTorch recommends; needs onnxscript). ``legacy``: the TorchScript-based exporter (deprecated
in PyTorch). ``auto`` tries the dynamo exporter first and keeps its graph when it exports, writes the
opset asked for and reproduces PyTorch (``check``); otherwise it says why and uses the legacy exporter."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from ...errors import CheckpointError, UsageError
from ...extras import MissingExtra
from ..formats import exporter_plan
from .common import require

# the check of a written graph: why it does not reproduce PyTorch, or None
GraphCheck = Callable[[Path], Optional[str]]


def _legacy(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int, dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():  # the exporter's own deprecation notice and tracer notes on shape arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(out), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": {0: "batch"}}, opset_version=opset, dynamo=False)


def _dynamo(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int, dynamic_hw: bool) -> None:
    require("onnxscript", "the dynamo ONNX exporter")
    dims = {0: torch.export.Dim("batch", min=1)}
    if dynamic_hw:
        dims.update({2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)})
    # external_data=False: one file, as the legacy exporter writes (a model over 2 GB still gets .onnx.data)
    torch.onnx.export(model, (example,), str(out), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": dims}, opset_version=opset, dynamo=True, external_data=False,
                      verbose=False)


EXPORTERS = {"dynamo": _dynamo, "legacy": _legacy}


def written_opset(out: Path) -> int:
    import onnx

    proto = onnx.load(str(out), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _remove(out: Path) -> None:
    out.unlink(missing_ok=True)
    Path(str(out) + ".data").unlink(missing_ok=True)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def write_graph(model: torch.nn.Module, example: torch.Tensor, out: Path, opset: int, dynamic_hw: bool = False,
                exporter: str = "auto", check: Optional[GraphCheck] = None) -> Tuple[str, Optional[str]]:
    """Write the graph to ``out``; returns (the exporter used, why auto did not use the dynamo one, or None)."""
    from ..quiet import third_party

    plan, skipped = exporter_plan(exporter, opset)
    notes: List[str] = [skipped] if skipped else []
    for i, name in enumerate(plan):
        last = i == len(plan) - 1
        try:
            with third_party(replay=False):  # a failure is reported below, in one line
                EXPORTERS[name](model, example, out, opset, dynamic_hw)
            got = written_opset(out)
            why = None if got == opset else f"it wrote opset {got} instead of {opset}"
            if why is None and check is not None and not last:
                why = check(out)
        except MissingExtra as e:
            if last:
                raise
            why = str(e).replace("the dynamo ONNX exporter needs", "needs")
        except (UsageError, KeyboardInterrupt):
            _remove(out)
            raise
        except Exception as e:  # the exporters raise many types for graphs they cannot capture
            _remove(out)
            if last:
                raise CheckpointError(f"the {name} ONNX exporter cannot export this model ({_short(e)})"
                                      + (f"; {notes[-1]}" if notes else "")) from None
            why = _short(e)
        if why is None:
            return name, "; ".join(notes) or None
        _remove(out)
        if last:
            raise CheckpointError(f"the {name} ONNX exporter's graph is wrong: {why}")
        notes.append(f"the {name} exporter was not used: {why}")
    raise AssertionError("unreachable: exporter_plan returns at least one exporter")
