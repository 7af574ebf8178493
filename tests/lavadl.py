"""lava-dl's own netx Network in Lava's fixed-point simulator: what snnc's netx import is compared
with where lava-dl ships no golden file (tests and bench/bench_netx_mnist.py)."""
from importlib import metadata
from pathlib import Path

import numpy as np

NETX_TESTS = Path(metadata.distribution("lava-dl").locate_file("tests/lava/lib/dl/netx"))


def run_lava_dl(path, bias, steps: int, loads=None, reset_interval=None, record=None, frames=None,
                num_layers=None):
    """Run lava-dl's `netx.hdf5.Network(path, reset_interval=...)` for `steps` chip steps with the
    input layer's bias mantissas `bias` [N] at the start; `loads` = (interval, offset, [bias, ...])
    has lava-dl's StateDataloader write the next bias after every step t with (t - 1) % interval
    == offset. `frames` [*Lava input shape, n] (with bias None) feed the input layer's neurons'
    a_in (or the first synapse) from a RingBuffer instead, cycling through them, as lava-dl's SDNN
    and ntidigits tests do; `num_layers` reads only the first layers, as its ntidigits test does
    (netx does not read an `average` layer). Returns (layer index -> its output spikes [steps, N] for the layers in `record`
    (default all), the output layer's voltage (a Sigma's sigma) [steps, classes], both in chip time, the seconds of
    the run itself)."""
    import time

    from snnc.backends.lava_backend import import_lava_runtime

    import_lava_runtime()   # snnc's kernels may have fixed multiprocessing's start method already

    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    network = netx.hdf5.Network(net_config=str(path), reset_interval=reset_interval, num_layers=num_layers)
    if frames is not None:   # into the Input block's neurons, else into the network's input port
        source = io.source.RingBuffer(data=frames)
        has_neurons = isinstance(network.in_layer, netx.blocks.process.Input)
        source.s_out.connect(network.in_layer.neuron.a_in if has_neurons else network.inp)
    else:
        network.in_layer.neuron.bias_mant.init = bias
    if loads is not None:
        interval, offset, dataset = loads
        loader = io.dataloader.StateDataloader(dataset=[(b, 0) for b in dataset], interval=interval, offset=offset)
        loader.connect_var(network.in_layer.neuron.bias_mant)
    sinks = {}
    for index in range(len(network.layers)) if record is None else record:
        sinks[index] = io.sink.RingBuffer(shape=network.layers[index].out.shape, buffer=steps)
        network.layers[index].out.connect(sinks[index].a_in)
    monitor = Monitor()
    state = "v" if hasattr(network.out_layer.neuron, "v") else "sigma"   # Lava's Sigma readout holds sigma
    monitor.probe(getattr(network.out_layer.neuron, state), steps)
    try:
        started = time.perf_counter()
        network.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        run_s = time.perf_counter() - started
        spikes = {index: sink.data.get().T.astype(np.int64) for index, sink in sinks.items()}
        voltage = np.asarray(monitor.get_data()[network.out_layer.neuron.name][state], dtype=np.int64)
    finally:
        network.stop()
    return spikes, voltage, run_s
