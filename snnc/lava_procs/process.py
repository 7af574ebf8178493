"""Lava processes for snnc's fixed-point networks (their models are in snnc.lava_procs.models).

Layout convention: arrays are in Lava's order, (x, y, channel) for feature maps and (n,) for
vectors; the backend converts from snnc's (channel, y, x).
"""
import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from snnc import fixedpoint

_LAVA = fixedpoint.LAVA_LIF_REGISTERS   # the defaults: Lava's LIF registers


def _array(value, shape):
    return np.broadcast_to(np.asarray(value, dtype=np.int64), shape).copy()


class SnncNeuron(AbstractProcess):
    """One snnc neuron population (a spiking layer or the readout integrator).

    Per step, in int64, snnc.fixedpoint.cuba_step with unit = 2**decay_bits:
    u = trunc(u * (unit - du - 1) / unit) + (a << activation_shift), limited to state_bits by
    `current_overflow`; v = trunc(v * (unit - dv) / unit) + u + bias, limited by
    `voltage_overflow`; a spiking population fires where v >= threshold (v > threshold when
    fire_rule is '>') and resets v to 0 ('hard') or subtracts reset_amount ('soft'); the
    integrator only integrates and sends v. With max_spikes M > 1 a neuron sends its count
    0..M (snnc.fixedpoint's rule) as a graded spike, and a soft reset subtracts count x
    reset_amount. input_shift (not None) replaces activation_shift for the input (Lava's Sigma
    readout takes a as it is). kind 'sigma_delta' runs snnc.fixedpoint.sigma_delta_step instead
    (u holds sigma, v act, `residue` the delta not yet sent; `activation`, `accumulate`,
    `message_shift` as in snnc.ir.Neuron) and sends its signed messages as graded spikes.

    Schedule: the population is `start` steps deep in the pipeline (the number of synapses, each
    with its one-step delay, between the input and it). At step s (0-based) it works on logical
    step t of sample i where s - start = i * period + t; it restarts from u = 0, v =
    initial_state at t = 0, and is idle (no bias, no decay, sends zeros) when t >= steps, before
    `start` and after the last sample. Results go to .npy memmaps given by path:
    record_path [samples, steps, n] (spikes or counts as uint8, messages as int32, or the
    integrator's v as int64),
    voltage_path [samples, steps, n] (v after reset), overflow_path [samples, 2] (counts of
    current and voltage limit events).
    """

    def __init__(self, *, shape, threshold=0, bias=0, reset_amount=0, initial_state=0,
                 du=fixedpoint.decay_unit(_LAVA["decay_bits"]) - 1, dv=0, kind="spiking", reset="hard", max_spikes=1,
                 fire_rule=">=", state_bits=_LAVA["state_bits"], decay_bits=_LAVA["decay_bits"],
                 activation_shift=_LAVA["activation_shift"], current_overflow=_LAVA["current_overflow"],
                 voltage_overflow=_LAVA["voltage_overflow"], input_shift=None, activation="identity", accumulate=True,
                 message_shift=0, start=0, period=1, steps=1, samples=1, record_path=None, voltage_path=None,
                 overflow_path=None, name=None):
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, kind=kind, reset=reset, max_spikes=int(max_spikes), fire_rule=fire_rule,
                         input_shift=None if input_shift is None else int(input_shift), activation=activation,
                         accumulate=bool(accumulate), message_shift=int(message_shift),
                         state_bits=int(state_bits), decay_bits=int(decay_bits),
                         activation_shift=int(activation_shift),
                         current_overflow=current_overflow, voltage_overflow=voltage_overflow,
                         start=int(start), period=int(period), steps=int(steps),
                         samples=int(samples), record_path=record_path, voltage_path=voltage_path,
                         overflow_path=overflow_path, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.threshold = Var(shape=shape, init=_array(threshold, shape))
        self.bias = Var(shape=shape, init=_array(bias, shape))
        self.reset_amount = Var(shape=shape, init=_array(reset_amount, shape))
        self.initial_state = Var(shape=shape, init=_array(initial_state, shape))
        self.du = Var(shape=(1,), init=int(du))
        self.dv = Var(shape=(1,), init=int(dv))
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=_array(initial_state, shape))
        self.residue = Var(shape=shape, init=0)


class SnncRelay(AbstractProcess):
    """Forwards the sum of everything connected to `a_in`, `delay` steps later (zero latency when
    delay = 0). snnc uses it to delay the shorter branch of a residual connection and to form a
    SEW add (the graded sum of two spike tensors)."""

    def __init__(self, *, shape, delay=0, name=None):
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, delay=int(delay), name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


class MemmapSink(AbstractProcess):
    """Writes what arrives on `a_in` at every step into a .npy memmap [steps, n] at `path` (a
    cheap alternative to Lava's element-by-element Var.get for reading results)."""

    def __init__(self, *, shape, path, steps, name=None):
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, path=str(path), steps=int(steps), name=name)
        self.a_in = InPort(shape=shape)
