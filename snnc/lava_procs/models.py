"""Fixed-point process models (tag 'fixed_pt') for snnc.lava_procs.process.

The neuron arithmetic is snnc.fixedpoint's cuba_step on numpy arrays, the definition that
snnc.execute compiles. This file must stay importable without torch or the rest of snnc (Lava
executes it while searching for models): it imports numpy, lava and snnc.fixedpoint only.
"""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from snnc import fixedpoint
from snnc.lava_procs.process import MemmapSink, SnncNeuron, SnncRelay


def _open(path):
    return None if path is None else np.load(path, mmap_mode="r+")


@implements(proc=SnncNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySnncNeuronModelFixed(PyLoihiProcessModel):
    """snnc's CUBA neuron with per-neuron threshold, bias, reset amount and initial state; it sends
    0/1 spikes, or a multi-spike population's counts 0..max_spikes (graded spikes). Kind
    'sigma_delta': Lava's sigma-delta rule, sending its messages as graded spikes."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    threshold: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    reset_amount: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    initial_state: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    residue: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._ready = False

    def _setup(self):
        p = self.proc_params
        self._p = {key: p[key] for key in ("kind", "activation_shift", "decay_bits", "start", "period",
                                             "steps", "samples")}
        spiking = p["kind"] == "spiking"
        shift = fixedpoint.input_shift(p["input_shift"], p["activation_shift"])
        self._sigma_delta = p["kind"] == "sigma_delta"
        if self._sigma_delta:
            self._rule = dict(threshold=self.threshold.astype(np.int64), bias=self.bias.astype(np.int64),
                              accumulate=int(p["accumulate"]), relu=int(p["activation"] == "relu"),
                              input_shift=shift, message_shift=p["message_shift"])
            self._top = fixedpoint.register_top(p["state_bits"])
        else:
            self._rule = dict(
                fire_level=fixedpoint.fire_at(self.threshold, p["fire_rule"]) if spiking else fixedpoint.NEVER_FIRES,
                reset_amount=self.reset_amount.astype(np.int64), bias=self.bias.astype(np.int64),
                keep_u=fixedpoint.current_keep(self.du[0], p["decay_bits"]),
                keep_v=fixedpoint.voltage_keep(self.dv[0], p["decay_bits"]), decay_bits=p["decay_bits"],
                shift=shift, top=fixedpoint.register_top(p["state_bits"]),
                current_saturates=fixedpoint.saturates(p["current_overflow"]),
                voltage_saturates=fixedpoint.saturates(p["voltage_overflow"]),
                hard=int(spiking and p["reset"] == "hard"), soft=int(spiking and p["reset"] == "soft"),
                max_spikes=p["max_spikes"])
        self._initial = self.initial_state.astype(np.int64)
        self._zeros = np.zeros(self.s_out.shape, dtype=np.int32)
        self._record = _open(p.get("record_path"))
        self._voltage = _open(p.get("voltage_path"))
        self._overflow = _open(p.get("overflow_path"))
        self._u = np.zeros(self.u.shape, dtype=np.int64)
        self._v = self._initial.copy()
        self._residue = np.zeros(self.u.shape, dtype=np.int64)
        self._ready = True

    def _restart(self):
        """A sample's first step: CUBA u = 0, v = initial state; sigma-delta sigma = initial state,
        act = residue = 0."""
        zeros = np.zeros(self.u.shape, dtype=np.int64)
        if self._sigma_delta:
            self._u, self._v, self._residue = self._initial.copy(), zeros, zeros.copy()
        else:
            self._u, self._v = zeros, self._initial.copy()

    def _sigma_delta_step(self, a):
        """Returns (messages, sigma values beyond the registers, act values beyond them)."""
        sigma, act, residue, messages = fixedpoint.sigma_delta_step(a, self._u, self._v, self._residue, **self._rule)
        self._u, self._v, self._residue = sigma, act, residue
        self.residue[:] = residue
        return messages.astype(np.int32), np.abs(sigma) >= self._top, np.abs(act) >= self._top

    def run_spk(self):
        if not self._ready:
            self._setup()
        p = self._p
        a = self.a_in.recv()
        local = self.time_step - 1 - p["start"]
        sample, t = divmod(local, p["period"])
        if local < 0 or sample >= p["samples"] or t >= p["steps"]:
            self.s_out.send(self._zeros)
            return
        if t == 0:
            self._restart()
        if self._sigma_delta:
            out, current_events, voltage_events = self._sigma_delta_step(a.astype(np.int64))
        else:
            u, v, counts, current_events, voltage_events = fixedpoint.cuba_step(
                a.astype(np.int64), self._u, self._v, **self._rule)
            out = counts.astype(np.int32) if p["kind"] == "spiking" else self._zeros   # a graded spike: the count
            self._u, self._v = u, v
        v = self._v
        self.u[:] = self._u
        self.v[:] = v
        if self._record is not None:
            self._record[sample, t] = (v if p["kind"] == "integrator" else out).reshape(-1)
        if self._voltage is not None:
            self._voltage[sample, t] = v.reshape(-1)
        if self._overflow is not None:
            self._overflow[sample] += (np.count_nonzero(current_events), np.count_nonzero(voltage_events))
        self.s_out.send(out)


@implements(proc=SnncRelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySnncRelayModelFixed(PyLoihiProcessModel):
    """A FIFO of `delay` steps (a plain pass-through when delay = 0)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._delay = int(proc_params["delay"])
        self._buffer = None

    def run_spk(self):
        value = self.a_in.recv().astype(np.int32)
        if self._delay == 0:
            self.s_out.send(value)
            return
        if self._buffer is None:
            self._buffer = np.zeros((self._delay,) + value.shape, dtype=np.int32)
        slot = (self.time_step - 1) % self._delay
        self.s_out.send(self._buffer[slot].copy())
        self._buffer[slot] = value


@implements(proc=MemmapSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMemmapSinkModelFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._memmap = None

    def run_spk(self):
        value = self.a_in.recv()
        if self._memmap is None:
            self._memmap = np.load(self.proc_params["path"], mmap_mode="r+")
        step = self.time_step - 1
        if step < self.proc_params["steps"]:
            self._memmap[step] = value.reshape(-1)
