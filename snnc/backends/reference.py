"""The integer reference: snnc.execute's fixed-point rule. It defines what every other backend must
compute, spike for spike."""
from snnc import execute

NAME = "reference"


def run(net, inputs, record_voltages=()):
    if not net.fixed:
        raise ValueError("the integer reference runs fixed-point networks; quantize first")
    return execute.run(net, inputs, record_voltages=record_voltages)


def run_export(export, inputs, record_voltages=()):
    """The export's network.json, the definition the other artifacts are checked against."""
    return run(export.network, inputs, record_voltages)
