"""PyTorch -> TFLite with litert-torch, channels-last I/O (NHWC in, no TRANSPOSE in the graph).

This is the one converter of the project: the export stage uses it for shipped models and the
latency tables get it injected for their single-op micro-models, so tables and shipped models
share one graph form.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from spnas_core.files import atomic_path  # noqa: E402
from spnas_core.native import quiet_native  # noqa: E402

log = logging.getLogger(__name__)


def quiet_litert() -> None:
    """litert-torch prints a progress tree per conversion; keep our own logs readable."""
    try:
        from litert_torch import progress

        progress.console.quiet = True
    except Exception:  # older/newer litert-torch without the progress module
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def convert_to_tflite(
    module: nn.Module,
    sample_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    nhwc_input: bool = True,
    quant_config: Any = None,
) -> Path:
    """Convert `module` (eval mode) to a .tflite file, written atomically.

    `sample_input` is NCHW (or [N, C] for 2-D modules); with `nhwc_input` the file takes NHWC.
    """
    with quiet_native():  # the first import loads TensorFlow: absl's preamble and the oneDNN notice
        import litert_torch

    quiet_litert()
    module = module.eval()
    if nhwc_input and sample_input.ndim == 4:
        wrapped: nn.Module = litert_torch.to_channel_last_io(module, args=[0]).eval()
        sample = sample_input.permute(0, 2, 3, 1).contiguous()
    else:
        wrapped, sample = module, sample_input
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's LeafSpec deprecation, not ours
        edge = litert_torch.convert(wrapped, (sample,), quant_config=quant_config)
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        edge.export(str(tmp))
    return Path(path)


def op_histogram(tflite: str | os.PathLike | bytes) -> Counter:
    """Builtin operator names and how often each occurs in a .tflite file (all subgraphs)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = tflite if isinstance(tflite, (bytes, bytearray)) else Path(tflite).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(names.get(code, f"CODE_{code}") if code != schema.BuiltinOperator.CUSTOM
                     else f"CUSTOM:{(oc.CustomCode() or b'').decode()}")
    hist: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for o in range(sg.OperatorsLength()):
            hist[codes[sg.Operators(o).OpcodeIndex()]] += 1
    return hist


def io_details(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensor details of a .tflite file (shape, dtype, quantization)."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        it = Interpreter(model_path=str(path))
    return it.get_input_details(), it.get_output_details()


def run_tflite(path: str | os.PathLike, inputs: Sequence[Any], threads: int = 1) -> list[Any]:
    """Run a .tflite file on each input array (batch 1 each); returns the first output per input."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    res = []
    for x in inputs:
        it.set_tensor(inp["index"], np.asarray(x, dtype=inp["dtype"]).reshape(inp["shape"]))
        it.invoke()
        res.append(it.get_tensor(out["index"]).copy())
    return res
