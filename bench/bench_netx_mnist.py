"""lava-dl's trained mnist.net on the mnist5k test digits: snnc's cycle simulator, snnc's integer
reference, lava-dl's own netx network in Lava's simulator and a dense torch model of the same
integers, in one run; every output compared, ms per digit and the ratios printed.

    .venv/bin/python bench/bench_netx_mnist.py --samples 1000

The file is the one lava-dl 0.6.0 ships (tests/lava/lib/dl/netx/mnist.net: 784-512-512-10, CUBA,
bias-driven input neurons, tSample 16). Each digit is presented as the input layer's bias mantissa
(the file's transform: 76 x pixel / 255 + 64, rounded down, docs/interop.md) for 16 steps, the way
lava-dl's tutorials stream it: lava-dl's `Network(reset_interval=16)` resets layer k one step after
layer k - 1 (snnc's `--netx-timing layer-reset`), so digits follow each other with no gap and the
pipeline drains only after the last one. Lava runs streamed (its best case: one compile, one run of
16 x samples + layers steps, the bias loaded by lava-dl's StateDataloader).

Compared: the last hidden layer's spikes of every digit at every step, the output integrator's
voltage at each digit's last step (the readout), the predictions.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
from lavadl import NETX_TESTS, run_lava_dl  # noqa: E402
from timing import best_of  # noqa: E402

MNIST_NET = NETX_TESTS / "mnist.net"


def dense_torch_model(net):
    """The fixed network as dense torch layers: float32 matmuls (exact: integer sums below 2**24),
    the neuron step from snnc.fixedpoint on int64 tensors; returns f(inputs) -> (hidden spikes
    [T, B, N] of the last spiking layer, the last layer's voltages [T, B, classes])."""
    import torch

    from snnc import execute, fixedpoint

    layers = []
    for node in net.nodes:
        if node.neuron is None:
            continue
        if node.op != "linear":
            raise SystemExit(f"node '{node.name}': the dense model takes linear layers only, not {node.op}")
        rule = execute.FixedNeuron(node, net.arithmetic)
        per_neuron = [torch.from_numpy(array) for array in (rule.fire_level, rule.reset_amount, rule.bias)]
        layers.append((torch.from_numpy(np.asarray(node.weight, np.float32)), rule, per_neuron))

    def run(inputs: np.ndarray):
        steps, batch = inputs.shape[:2]
        x0 = torch.from_numpy(inputs.reshape(steps, batch, -1).astype(np.float32))
        state = [(torch.zeros((batch, rule.initial.size), dtype=torch.int64),                # u
                  torch.from_numpy(np.broadcast_to(rule.initial, (batch, rule.initial.size)).copy()))   # v
                 for _, rule, _ in layers]
        hidden, voltages = [], []
        for t in range(steps):
            x = x0[t]
            for i, (weight, rule, (fire_level, reset_amount, bias)) in enumerate(layers):
                a = (x @ weight.T).to(torch.int64)
                u, v = state[i]
                u, v, fired, _, _ = fixedpoint.cuba_step(
                    a, u, v, fire_level, reset_amount, bias, rule.keep_u, rule.keep_v, rule.decay_bits,
                    rule.shift, rule.top, rule.current_saturates, rule.voltage_saturates, rule.hard, rule.soft)
                state[i] = (u, v)
                if i == len(layers) - 2:
                    hidden.append(fired.to(torch.uint8))
                x = fired.to(torch.float32)
            voltages.append(v)
        return torch.stack(hidden).numpy(), torch.stack(voltages).numpy()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="mnist5k test digits (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for snnc's and torch's runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from lava.lib.dl import netx  # noqa: F401  (first: Lava sets multiprocessing's start method)
    import torch

    from snnc import execute
    from snnc.backends import cycle, reference
    from snnc.data import load_dataset
    from snnc.frontends.netx import load_netx

    net = load_netx(MNIST_NET, timing="layer-reset")
    period = net.T
    digits = load_dataset("mnist5k").test_images[:args.samples].reshape(args.samples, -1)   # flat input
    inputs = execute.encode(net, digits)                       # [T, B, 784] bias mantissas
    bias = inputs[0].reshape(len(digits), -1).astype(np.int64)
    spiking = [node.name for node in net.nodes if node.neuron is not None and node.neuron.kind == "spiking"]
    hidden_name, output_name = spiking[-1], [n.name for n in net.nodes if n.neuron is not None][-1]

    reference.run(net, inputs[:, :1])
    ref_s, ref = best_of(lambda: reference.run(net, inputs, record_voltages=(output_name,)), args.repeats)
    cycle.run(net, inputs[:, :1])
    cyc_s, cyc = best_of(lambda: cycle.run(net, inputs, record_voltages=(output_name,)), args.repeats)
    torch_s, (dense_hidden, dense_v) = best_of(lambda: dense_torch_model(net)(inputs), args.repeats, warm_up=True)
    hidden_k, output_k = len(spiking) - 1, len(spiking)   # lava-dl's layer indices (0: the input layer)
    following = list(bias[1:]) or [bias[0]]                 # loaded after each digit's last input step
    lava_spikes, lava_v, lava_s = run_lava_dl(MNIST_NET, bias[0], len(digits) * period + output_k + 1,
                                              loads=(period, period - 1, following), reset_interval=period,
                                              record=[hidden_k])

    # chip time: layer k (0 = the input layer) holds digit i at steps i*period + k + [0, period)
    index = np.arange(len(digits))[None, :] * period + np.arange(period)[:, None]   # [T, B]
    lava_hidden = lava_spikes[hidden_k][index + hidden_k]                                     # [T, B, N]
    lava_readout = lava_v[index[-1] + output_k]                                     # [B, classes]
    outputs = {
        "reference": (ref.spikes[hidden_name], ref.voltages[output_name][-1]),
        "cycle": (cyc.spikes[hidden_name], cyc.voltages[output_name][-1]),
        "dense torch": (dense_hidden, dense_v[-1]),
        "lava-dl netx in Lava": (lava_hidden, lava_readout),
    }
    base_spikes, base_v = outputs["reference"]
    identical = {name: bool(np.array_equal(s, base_spikes) and np.array_equal(v, base_v))
                 for name, (s, v) in outputs.items()}
    labels = load_dataset("mnist5k").test_labels[:args.samples]
    ms = {"cycle": cyc_s, "reference": ref_s, "dense torch": torch_s, "lava-dl netx in Lava": lava_s}
    report = {
        "network": "lava-dl 0.6.0 tests/lava/lib/dl/netx/mnist.net", "digits": len(digits), "steps": period,
        "threads": torch.get_num_threads(),
        "ms_per_digit": {name: round(1000 * s / len(digits), 3) for name, s in ms.items()},
        "identical_to_reference": identical,
        "accuracy": float((base_v.argmax(axis=1) == labels).mean()),
        "cycle_vs_dense_torch": round(torch_s / cyc_s, 2), "cycle_vs_lava": round(lava_s / cyc_s, 1),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['network']}: {len(digits)} digits x {period} steps, threads {report['threads']}")
        for name, value in report["ms_per_digit"].items():
            print(f"  {name:22s} {value:9.3f} ms/digit  identical: {identical[name]}")
        print(f"  cycle simulator: {report['cycle_vs_dense_torch']}x the dense torch speed, "
              f"{report['cycle_vs_lava']}x Lava's; accuracy {report['accuracy']:.3f}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
