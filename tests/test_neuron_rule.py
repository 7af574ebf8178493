"""snnc.execute.FixedNeuron (the compiled kernel every integer backend but ONNX and Lava runs)
against SEMANTICS section 2 written out as a plain loop over Python integers, in every overflow
mode, reset, fire rule and decay, with registers narrow enough to overflow."""
import itertools

import numpy as np
import pytest
import torch

from snnc.execute import FixedNeuron
from snnc.ir import Neuron, Node

SHAPE = (3, 2, 2)
T, B = 6, 3


def _decayed(x: int, keep: int) -> int:
    magnitude = abs(x) * keep // 4096
    return magnitude if x >= 0 else -magnitude


def _limited(x: int, bits: int, mode: str) -> int:
    top = 2 ** (bits - 1)
    if mode == "saturate":
        return max(-(top - 1), min(top - 1, x))
    if x > top:
        return x - 2 * top
    return x + 2 * top if x <= -top else x


def _loop(node: Node, arithmetic: dict, a: np.ndarray):
    """(outputs, voltages, busy, current events, voltage events) one neuron and step at a time."""
    n, bits = node.neuron, arithmetic["state_bits"]
    flat = {key: np.broadcast_to(value, SHAPE).reshape(-1) for key, value in
            (("threshold", n.threshold if n.kind == "spiking" else 0), ("bias", n.bias),
             ("reset", n.reset_amount if n.reset == "soft" else 0), ("initial", n.initial_state))}
    a = a.reshape(a.shape[0], B, -1)
    outputs, voltages, busy = (np.zeros((T, B, a.shape[2]), np.int64) for _ in range(3))
    events = [0, 0]
    for b, i in itertools.product(range(B), range(a.shape[2])):
        u, v = 0, int(flat["initial"][i])
        for t in range(T):
            busy[t, b, i] = u != 0 or v != 0
            step_input = int(a[min(t, len(a) - 1), b, i])        # one step of input stands for all
            current = _decayed(u, 4096 - int(n.u_decay) - 1) + (step_input << arithmetic["activation_shift"])
            u = _limited(current, bits, arithmetic["current_overflow"])
            voltage = _decayed(v, 4096 - int(n.v_decay)) + u + int(flat["bias"][i])
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


CASES = list(itertools.product(("wrap", "saturate"), ("wrap", "saturate"), (">", ">="),
                               (("spiking", "hard"), ("spiking", "soft"), ("spiking", "none"), ("integrator", "none")),
                               (4095, 1000), (0, 1000, 2048)))


@pytest.mark.parametrize("current_mode, voltage_mode, fire_rule, kind_reset, u_decay, v_decay", CASES)
def test_kernel_equals_the_rule_written_as_a_loop(current_mode, voltage_mode, fire_rule, kind_reset, u_decay, v_decay):
    rng = np.random.default_rng(CASES.index((current_mode, voltage_mode, fire_rule, kind_reset, u_decay, v_decay)))
    arithmetic = {"state_bits": 12, "activation_shift": 6, "current_overflow": current_mode,
                  "voltage_overflow": voltage_mode, "fire_rule": fire_rule}
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
                  "voltage_overflow": "saturate", "fire_rule": ">="}
    _, _, _, events = _loop(_population(rng, "spiking", "soft", 1000, 0), arithmetic,
                            rng.integers(-40, 40, (T, B) + SHAPE))
    assert events[0] > 0 and events[1] > 0


def test_one_step_of_input_stands_for_every_step():
    """A static input (direct encoding) is handed over once: the same as repeating it T times."""
    rng = np.random.default_rng(1)
    arithmetic = {"state_bits": 24, "activation_shift": 6, "current_overflow": "wrap",
                  "voltage_overflow": "saturate", "fire_rule": ">="}
    node = _population(rng, "spiking", "soft", 1000, 1000)
    a = torch.from_numpy(rng.integers(-40, 40, (1, B) + SHAPE)).to(torch.float32)
    rule = FixedNeuron(node, arithmetic)
    once, repeated = rule.run(a, T), rule.run(a.expand((T,) + a.shape[1:]), T)
    assert np.array_equal(once.outputs.numpy(), repeated.outputs.numpy())
    expected, _, _, _ = _loop(node, arithmetic, a.numpy())
    assert np.array_equal(once.outputs.numpy().reshape(T, B, -1), expected)
