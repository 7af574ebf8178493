"""snnc.execute.FixedNeuron (the compiled kernel every integer backend but ONNX and Lava runs)
against docs/semantics.md section 3 written out as a plain loop over Python integers, in every
overflow mode, reset, fire rule and decay, with registers narrow enough to overflow, and with
decay registers of 12 and 8 bits; a network for a target with 8-bit decays gives the loop's spikes
on the reference, ONNX, the cycle simulator and Lava."""
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from snnc.execute import FixedNeuron, encode
from snnc.ir import Network, Neuron, Node
from snnc.targets import load_target

SHAPE = (3, 2, 2)
T, B = 6, 3


def _decayed(x: int, keep: int, decay_bits: int) -> int:
    magnitude = abs(x) * keep // 2 ** decay_bits
    return magnitude if x >= 0 else -magnitude


def _limited(x: int, bits: int, mode: str) -> int:
    top = 2 ** (bits - 1)
    if mode == "saturate":
        return max(-(top - 1), min(top - 1, x))
    if x > top:
        return x - 2 * top
    return x + 2 * top if x <= -top else x


def _loop(node: Node, arithmetic: dict, a: np.ndarray, steps: int = T):
    """(outputs, voltages, busy, current events, voltage events) one neuron and step at a time."""
    n, bits, decay_bits = node.neuron, arithmetic["state_bits"], arithmetic["decay_bits"]
    unit, batch = 2 ** decay_bits, a.shape[1]
    flat = {key: np.broadcast_to(value, node.shape).reshape(-1) for key, value in
            (("threshold", n.threshold if n.kind == "spiking" else 0), ("bias", n.bias),
             ("reset", n.reset_amount if n.reset == "soft" else 0), ("initial", n.initial_state))}
    a = a.reshape(a.shape[0], batch, -1)
    outputs, voltages, busy = (np.zeros((steps, batch, a.shape[2]), np.int64) for _ in range(3))
    events = [0, 0]
    for b, i in itertools.product(range(batch), range(a.shape[2])):
        u, v = 0, int(flat["initial"][i])
        for t in range(steps):
            busy[t, b, i] = u != 0 or v != 0
            step_input = int(a[min(t, len(a) - 1), b, i])        # one step of input stands for all
            current = _decayed(u, unit - int(n.u_decay) - 1, decay_bits) + (step_input << arithmetic["activation_shift"])
            u = _limited(current, bits, arithmetic["current_overflow"])
            voltage = _decayed(v, unit - int(n.v_decay), decay_bits) + u + int(flat["bias"][i])
            v = _limited(voltage, bits, arithmetic["voltage_overflow"])
            events[0] += u != current
            events[1] += v != voltage
            threshold = int(flat["threshold"][i])
            fired = n.kind == "spiking" and (v > threshold if arithmetic["fire_rule"] == ">" else v >= threshold)
            if fired and n.reset == "hard":
                v = 0
            elif fired and n.reset == "soft":
                v -= int(flat["reset"][i])
            outputs[t, b, i] = fired if n.kind == "spiking" else v
            voltages[t, b, i] = v
    return outputs, voltages, busy, events


def _population(rng, kind: str, reset: str, u_decay: int, v_decay: int) -> Node:
    spiking = kind == "spiking"
    neuron = Neuron(kind=kind, threshold=rng.integers(200, 1500, SHAPE) if spiking else None, reset=reset,
                    reset_amount=rng.integers(100, 1500, SHAPE) if reset == "soft" else None,
                    bias=rng.integers(-60, 60, (SHAPE[0], 1, 1)), initial_state=rng.integers(-300, 300, SHAPE),
                    v_decay=v_decay, u_decay=u_decay)
    return Node("layer", "conv2d", ["input"], SHAPE, neuron=neuron)


KINDS = (("spiking", "hard"), ("spiking", "soft"), ("spiking", "none"), ("integrator", "none"))
CASES = list(itertools.product(("wrap", "saturate"), ("wrap", "saturate"), (">", ">="), KINDS,
                               ((12, 4095, 0), (12, 4095, 1000), (12, 4095, 2048), (12, 1000, 0), (12, 1000, 1000),
                                (12, 1000, 2048), (8, 255, 0), (8, 60, 100), (8, -1, 256))))


@pytest.mark.parametrize("current_mode, voltage_mode, fire_rule, kind_reset, decays", CASES)
def test_kernel_equals_the_rule_written_as_a_loop(current_mode, voltage_mode, fire_rule, kind_reset, decays):
    rng = np.random.default_rng(CASES.index((current_mode, voltage_mode, fire_rule, kind_reset, decays)))
    decay_bits, u_decay, v_decay = decays
    arithmetic = {"state_bits": 12, "activation_shift": 6, "current_overflow": current_mode,
                  "voltage_overflow": voltage_mode, "fire_rule": fire_rule, "decay_bits": decay_bits}
    node = _population(rng, *kind_reset, u_decay=u_decay, v_decay=v_decay)
    a = rng.integers(-40, 40, (T, B) + SHAPE)
    expected, voltages, busy, events = _loop(node, arithmetic, a)
    rule = FixedNeuron(node, arithmetic)
    for dtype in (torch.float64, torch.float32):   # the input dtypes the backends hand over
        result = rule.run(torch.from_numpy(a).to(dtype), T, record_voltage=True, record_busy=True)
        assert result.outputs.shape == (T, B) + SHAPE
        assert np.array_equal(result.outputs.numpy().reshape(T, B, -1), expected)
        assert np.array_equal(result.voltages.numpy().reshape(T, B, -1), voltages)
        assert np.array_equal(result.busy.numpy().reshape(T, B, -1), busy)
        assert result.overflow == {"current": events[0], "voltage": events[1]}
        assert result.spike_count == (int(expected.sum()) if node.spiking else 0)
        plain = rule.run(torch.from_numpy(a).to(dtype), T)      # the loop that records nothing more
        assert plain.voltages is None and plain.busy is None
        assert np.array_equal(plain.outputs.numpy(), result.outputs.numpy())
        assert plain.overflow == result.overflow


def test_overflow_really_happens_in_the_cases():
    """The cases above exercise the limits: with 12-bit registers both registers overflow."""
    rng = np.random.default_rng(0)
    arithmetic = {"state_bits": 12, "activation_shift": 6, "current_overflow": "wrap",
                  "voltage_overflow": "saturate", "fire_rule": ">=", "decay_bits": 12}
    _, _, _, events = _loop(_population(rng, "spiking", "soft", 1000, 0), arithmetic,
                            rng.integers(-40, 40, (T, B) + SHAPE))
    assert events[0] > 0 and events[1] > 0


def test_one_step_of_input_stands_for_every_step():
    """A static input (direct encoding) is handed over once: the same as repeating it T times."""
    rng = np.random.default_rng(1)
    arithmetic = {"state_bits": 24, "activation_shift": 6, "current_overflow": "wrap",
                  "voltage_overflow": "saturate", "fire_rule": ">=", "decay_bits": 12}
    node = _population(rng, "spiking", "soft", 1000, 1000)
    a = torch.from_numpy(rng.integers(-40, 40, (1, B) + SHAPE)).to(torch.float32)
    rule = FixedNeuron(node, arithmetic)
    once, repeated = rule.run(a, T), rule.run(a.expand((T,) + a.shape[1:]), T)
    assert np.array_equal(once.outputs.numpy(), repeated.outputs.numpy())
    expected, _, _, _ = _loop(node, arithmetic, a.numpy())
    assert np.array_equal(once.outputs.numpy().reshape(T, B, -1), expected)


# --- a target with 8-bit decays, end to end ----------------------------------------------------

TARGETS = Path(__file__).resolve().parent.parent / "targets"
NARROW_T = 6


def _target_with_decay_bits(tmp_path, decay_bits: int):
    """targets/loihi2.yaml with another decay width, as a user's target file."""
    doc = yaml.safe_load((TARGETS / "loihi2.yaml").read_text())
    doc["name"], doc["arithmetic"]["decay_bits"] = f"loihi2-decay{decay_bits}", decay_bits
    path = tmp_path / f"decay{decay_bits}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_target(str(path))


def _leaky_network(target) -> Network:
    """input (4) -> fc (3 soft-reset neurons, du = 100, dv = 60) -> readout (2, du = 200, dv = 30),
    registers meant for 8-bit decays (unit 256)."""
    rng = np.random.default_rng(7)
    fc = Neuron(kind="spiking", threshold=np.array([9000, 12000, 15000]), reset="soft",
                reset_amount=np.array([6000, 8000, 9000]), bias=np.array([40, -30, 0]),
                initial_state=np.array([500, 0, -700]), v_decay=60, u_decay=100)
    readout = Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=np.zeros(2, np.int64),
                     initial_state=np.zeros(2, np.int64), v_decay=30, u_decay=200)
    return Network(name="leaky", T=NARROW_T, readout="mean", nodes=[
        Node("input", "input", [], (4,)),
        Node("fc", "linear", ["input"], (3,), weight=rng.integers(-3, 6, (3, 4)), neuron=fc),
        Node("readout", "linear", ["fc"], (2,), weight=np.array([[5, -2, 1], [-1, 3, 4]]), neuron=readout),
    ], arithmetic=dict(target.arithmetic, kind="fixed"), encoding={"scale": 1 / 255, "max": 255},
        metadata={"target": target.name})


def _loop_network(net: Network, pixels: np.ndarray):
    """fc spikes [T, B, 3] and readout steps [T, B, 2] from the plain loop, layer after layer."""
    fc, readout = net.node("fc"), net.node("readout")
    a = (pixels @ fc.weight.T)[None]                                  # the same input at every step
    spikes = _loop(fc, net.arithmetic, a, steps=net.T)[0]
    steps = _loop(readout, net.arithmetic, spikes @ readout.weight.T, steps=net.T)[0]
    return spikes, steps


def test_eight_bit_decays_give_the_loops_spikes_on_every_backend(tmp_path):
    from snnc.backends import cycle, lava_backend, onnx_backend, reference
    from snnc.passes.mapping import map_to_cores

    target = _target_with_decay_bits(tmp_path, 8)
    net = _leaky_network(target)
    pixels = np.random.default_rng(3).integers(0, 256, (5, 4))
    inputs = encode(net, pixels)
    spikes, steps = _loop_network(net, pixels)
    assert spikes.any() and not spikes.all()                            # the comparison is not vacuous
    traces = {"reference": reference.run(net, inputs), "onnx": onnx_backend.run(net, inputs),
              "cycle": cycle.simulate(net, map_to_cores(net, target), target, inputs)[0],
              "lava": lava_backend.run(net, inputs)}
    for name, trace in traces.items():
        assert np.array_equal(trace.spikes["fc"], spikes), name
        assert np.array_equal(trace.readout_steps, steps), name
        assert np.array_equal(trace.readout, steps.sum(axis=0)), name
    as_if_12_bits = dict(net.arithmetic, decay_bits=12)                # the width is really read
    other = _loop(net.node("fc"), as_if_12_bits, (pixels @ net.node("fc").weight.T)[None], steps=net.T)[0]
    assert not np.array_equal(other, spikes)


def test_quantizing_for_eight_bit_decays_uses_units_of_256(tmp_path):
    from netfactory import random_images, random_network, recipe

    from snnc.backends import cycle, onnx_backend, reference
    from snnc.compiler import compile_network
    from snnc.passes.mapping import map_to_cores

    target = _target_with_decay_bits(tmp_path, 8)
    spec = recipe("mnist_lif", arch_params={"channels": [4, 8], "hidden": 16})   # LIF, tau = 2
    fixed = compile_network(random_network(spec, seed=5), target).fixed
    for node in fixed.nodes:
        if node.neuron is not None and node.spiking:
            assert (node.neuron.v_decay, node.neuron.u_decay) == (128, 255)   # 256 / tau; 256 - 1: no memory
    inputs = encode(fixed, random_images(spec, 3, seed=6))
    expected = reference.run(fixed, inputs)
    assert sum(int(s.sum()) for s in expected.spikes.values()) > 0
    for trace in (onnx_backend.run(fixed, inputs), cycle.simulate(fixed, map_to_cores(fixed, target), target, inputs)[0]):
        assert all(np.array_equal(trace.spikes[k], expected.spikes[k]) for k in expected.spikes)
        assert np.array_equal(trace.readout_steps, expected.readout_steps)
