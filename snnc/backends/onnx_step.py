"""The streaming ONNX backend: model_step.onnx (one step, explicit state) driven step by step by
onnxruntime, as an application streaming live input would run it."""
from __future__ import annotations

from snnc import onnx_graph
from snnc.backends.onnx_backend import STEP_MODEL, initial_state, run_steps
from snnc.errors import InputError
from snnc.execute import Trace
from snnc.ir import Network

NAME = "onnx-step"


def run(net: Network, inputs, record_voltages=()) -> Trace:
    """Build model_step.onnx in memory and stream `inputs` through it."""
    if not net.fixed:
        raise InputError("the ONNX backend runs fixed-point networks; quantize first")
    return run_steps(onnx_graph.fixed_model(net, stepwise=True), inputs,
                     initial_state(net, inputs.shape[1]))


def run_export(export, inputs, record_voltages=()) -> Trace:
    """The export's model_step.onnx as written, from the initial state of its network."""
    return run_steps(export.path(STEP_MODEL), inputs, initial_state(export.network, inputs.shape[1]))
