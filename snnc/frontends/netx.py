"""Frontend: a lava-dl netx HDF5 network (`.net`) becomes a FIXED-point snnc Network.

A netx file (written by lava-dl slayer's `export_hdf5`, read by `lava.lib.dl.netx.hdf5.Network`) is
a list of layers `layer/0 .. layer/n-1`, each a group with at least `type` and `shape`:

    input   : shape (C, H, W) or (N,); optionally a neuron (not supported here, see below)
    dense   : shape, inFeatures, outFeatures, weight [out, in], bias?, delay?, neuron/{...}
    conv    : shape (C, H, W), inChannels, outChannels, kernelSize, stride, padding, dilation,
              groups, weight [out, in, kH, kW], bias?, delay?, neuron/{...}
    flatten : shape
    neuron  : type 'CUBA' or 'LOIHI', iDecay, vDecay, vThMant, refDelay, gradedSpike (messageBits)

Shapes are stored in (C, H, W) order (netx reverses them to Lava's (x, y, z)); the conv kernel is a
correlation kernel as in PyTorch (netx flips it for Lava's convolution, which flips it back).

netx runs every CUBA/LOIHI layer as Lava's `LIF` (docs/semantics.md, section 6) with du = iDecay - 1 and
dv = vDecay, vth = vThMant, bias_mant = bias with bias_exp = 6; dense weights go through
`optimize_weight_bits` (8-bit mantissa, exponent) and Lava's Dense. In snnc's integer IR this is,
per step:  u = trunc(u (4096 - iDecay)/4096) + (a << 6), v = trunc(v (4096 - vDecay)/4096) + u +
(bias << 6), spike when v > vThMant << 6, v = 0 on a spike. So the IR gets u_decay = iDecay - 1
(snnc's register keeps 4096 - u_decay - 1), v_decay = vDecay, threshold = vThMant << 6 with the
fire rule '>', bias = bias << 6, weights = the file's integers (checked to pass Lava's 8-bit synapse
unchanged). refDelay is ignored, as netx ignores it (Lava's LIF has no refractory period).

Time: lava-dl's netx network runs in Lava with one step of latency per Dense/Conv synapse
(DelayDense: 1 + d), the Input block's neurons taking the input (or the image, as their bias) directly.
Two timings of a file lava-dl wrote are read (`timing`):
- 'layer-reset' (default): every layer starts a sample at rest when the sample's first input reaches it,
  as slayer trained the network and as Lava runs netx.hdf5.Network(reset_interval=...) (each layer is
  reset one step after the one before it). That is snnc's logical time: no latency is modelled, and
  Lava's output at step t + depth is snnc's at step t.
- 'free-running': netx.hdf5.Network without reset, from power-on: biases act from step 0 while the input
  is still in flight, so every synaptic node gets Node.delay = 1 (+ axonal delays) and snnc's trace equals
  Lava's step for step.
They differ only where a layer after the input has a bias (or input neurons feed spiking layers with
memory of the early steps); without a --netx-timing choice such a file prints a warning. A file snnc
wrote (it has an `snnc` group) is in snnc's logical time, or free-running where its `snnc/latency` is 1.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from snnc import fixedpoint
from snnc.errors import DesignRuleError, InputError, UsageError
from snnc.ir import (Network, Neuron, Node, check_shape, check_steps, check_weight_count, conv_output_shape,
                     encoding_problem)

NEURON_TYPES = ("CUBA", "LOIHI", "SDNN")
TEXT_FIELDS = ("type", "activation")   # a netx neuron's fields that hold text
BIAS_EXP = 6            # netx always sets bias_exp = 6
# netx's sigma-delta neurons: spike_exp = 6 (its default) and state_exp = 6; thresholds and biases
# are scaled by 2^(spike_exp + state_exp), the Delta encoder shifts its input by as much, and every
# message is the sent delta >> state_exp
SDNN_SPIKE_EXP, SDNN_STATE_EXP = 6, 6
SDNN_SCALE_SHIFT = SDNN_SPIKE_EXP + SDNN_STATE_EXP
THRESHOLD_SHIFT = fixedpoint.LAVA_LIF_THRESHOLD_SHIFT   # Lava's LIF compares v > vth << 6
# Lava's CUBA LIF as the netx network defines it (docs/semantics.md, section 6).
LAVA_LIF_RULES = fixedpoint.LAVA_LIF_REGISTERS
DECAY_UNITY = fixedpoint.decay_unit(LAVA_LIF_RULES["decay_bits"])   # iDecay and vDecay are fractions of it
# netx's neuron for a dense layer stored without one: "non-leaky integrator"
DEFAULT_NEURON = {"type": "CUBA", "iDecay": 0, "vDecay": DECAY_UNITY,
                  "vThMant": 1 << fixedpoint.LAVA_LIF_THRESHOLD_BITS, "refDelay": 1, "gradedSpike": False}
# What a netx network's input is: binary spikes every step (netx's default input_message_bits = 0).
SPIKE_ENCODING = {"kind": "spikes", "scale": 1.0, "max": 1, "bits": 1,
                  "description": "binary input spikes (0/1) at every step, netx's default; "
                                 "images: spike where pixel >= threshold",
                  "threshold": 128}
NETX_OVERRIDES = {"kind": "fixed", "fire_rule": fixedpoint.LAVA_LIF_FIRE_RULE, "threshold_shift": THRESHOLD_SHIFT,
                  "threshold_mant_bits": fixedpoint.LAVA_LIF_THRESHOLD_BITS, "reset_modes": ["hard"],
                  "weight_bits": 9}


def _current_decay(i_decay: int) -> int:
    """snnc's du for netx's iDecay: Lava's LIF keeps unit - iDecay of u per step, snnc's register
    du keeps unit - du - 1 (fixedpoint.current_keep), so du = iDecay - 1."""
    return i_decay - 1


def netx_arithmetic(target="loihi2") -> dict:
    """The fixed-point rules of a netx network: the target's registers with Lava LIF's fire rule.
    The target must have Lava's CUBA neuron widths (24-bit state, activation << 6, 12-bit decays)."""
    from snnc.targets import Target, load_target

    target = target if isinstance(target, Target) else load_target(target)
    for key, value in LAVA_LIF_RULES.items():
        if target.arithmetic.get(key) != value:
            raise DesignRuleError(f"target '{target.name}': netx networks need {key} = {value!r} (Lava's CUBA "
                                  f"neuron), the target has {target.arithmetic.get(key)!r}")
    return dict(target.arithmetic, **NETX_OVERRIDES)


# --- reading HDF5 the way netx does -------------------------------------------------------------

def _text(value) -> str:
    """A netx string field: an array of bytes ('S10', shape (1,)), a scalar bytes or str."""
    value = value[()] if hasattr(value, "shape") else value
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _numbers(group, key) -> np.ndarray:
    """A numeric field of a netx group; InputError naming it when it is missing, a group or text."""
    item = group.get(key)
    if item is None or not hasattr(item, "dtype"):
        raise InputError(f"netx {group.name}: field '{key}' is missing")
    if item.dtype.kind not in "biuf":
        raise InputError(f"netx {group.name}: field '{key}' holds "
                         f"{'text' if item.dtype.kind in 'OSU' else item.dtype}, not numbers")
    return np.asarray(item[()])


def _int_array(group, key) -> np.ndarray:
    """netx reads weights and biases with `.astype(int)` (truncation toward zero)."""
    return _numbers(group, key).astype(np.int64)


def _value(group, key, default=None):
    if key not in group:
        return default
    return _numbers(group, key)


def _integer(group, key) -> int:
    """A field holding one integer (a count or a size)."""
    value = _numbers(group, key)
    if value.size != 1 or not np.isfinite(value).all():
        raise InputError(f"netx {group.name}: field '{key}' must be one number, got {value.tolist()}")
    return int(value.ravel()[0])


def _shape(group, key="shape") -> tuple[int, ...]:
    """A layer's stored shape, checked against the limits before anything of that size exists."""
    return check_shape([int(x) for x in _numbers(group, key).astype(np.int64).ravel()], f"netx {group.name}")


def _pair(group, key, default, where) -> tuple[int, int]:
    value = _value(group, key)
    if value is None:
        return default, default
    value = value.astype(np.int64).ravel()
    if value.size == 1:
        return int(value[0]), int(value[0])
    if value.size == 2:
        return int(value[0]), int(value[1])
    raise InputError(f"{where}: {key} {value.tolist()} is not one or two integers")


def _name(group, default: str) -> str:
    """snnc's exporter stores each node's name as the layer attribute 'snnc_name' (netx ignores it)."""
    name = group.attrs.get("snnc_name")
    if name is None:
        return default
    try:
        return name.decode() if isinstance(name, bytes) else str(name)
    except UnicodeDecodeError:
        raise InputError(f"netx {group.name}: attribute snnc_name is not UTF-8 text") from None


def _stored_latency(attrs: dict) -> int:
    """snnc/latency of a file snnc wrote: 1 where every synapse takes a step (free-running), else 0."""
    raw = attrs.get("latency", 0)
    if not isinstance(raw, (int, np.integer)) or int(raw) not in (0, 1):
        raise InputError(f"netx file: snnc/latency attribute must be 0 or 1, got {raw!r}")
    return int(raw)


def _stored_drive(attrs: dict, default: str) -> str:
    """snnc/input_drive of a file snnc wrote: how its input neurons are driven."""
    raw = attrs.get("input_drive", default)
    drive = raw.decode() if isinstance(raw, bytes) else str(raw)
    if drive not in INPUT_DRIVES:
        raise InputError(f"netx file: snnc/input_drive attribute must be one of {INPUT_DRIVES}, got {raw!r}")
    return drive


def _stored_encoding(attrs: dict) -> Optional[dict]:
    raw = attrs.get("encoding")
    if raw is None:
        return None
    try:
        encoding = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:  # also text that is not UTF-8
        raise InputError("netx file: malformed snnc/encoding attribute") from None
    problem = encoding_problem(encoding, needs_scale=False)   # a netx network is fixed point
    if problem:
        raise InputError(f"netx file: snnc/encoding attribute: {problem}")
    return encoding


def _neuron_config(group, where) -> Optional[dict]:
    if "neuron" not in group:
        return None
    neuron = group["neuron"]
    out = {"type": _text(neuron["type"]) if "type" in neuron else "CUBA"}
    for key in neuron.keys():
        if key in TEXT_FIELDS:
            out[key] = _text(neuron[key])
        elif key != "type":
            out[key] = _numbers(neuron, key)
    return out


# --- Lava's dense synapse, to check that it passes the weights unchanged -------------------------

def lava_dense_weights(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """What netx + Lava's bit-accurate Dense make of integer weights W: optimize_weight_bits scales
    them by 2^s (s = floor(log2(scale)) + signed), Dense clips them to 8 bits with sign mode and
    truncates the low bits, and shifts the accumulated sum by -s. Returns (effective integer weight
    per synapse, or None if not an integer, num_weight_bits, weight_exponent); the effective weight
    equals W exactly for every weight matrix slayer exports (even integers in [-256, 254])."""
    weight = np.asarray(weight, dtype=np.int64)
    top, bottom = int(weight.max(initial=0)), int(weight.min(initial=0))
    if top == 0 and bottom == 0:
        return weight.copy(), 8, 0
    if bottom >= 0:
        mode, signed, scale = "excitatory", 0, 255 / top
    elif top <= 0:
        mode, signed, scale = "inhibitory", 0, -256 / bottom
    else:
        mode, signed, scale = "mixed", 1, min(127 / top, -128 / bottom)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    precision = 8
    while precision > 0 and np.any(weight % (1 << precision)):
        precision -= 1
    precision -= signed
    num_weight_bits = 8 - scale_bits - precision
    exponent = -scale_bits
    if scale_bits < 0:
        return None, num_weight_bits, exponent
    scaled = weight << scale_bits
    # Lava's Dense: clip to 8 bits (sign mode), then truncate the low bits
    magnitude = -scaled if mode == "inhibitory" else scaled
    low, high = (-256, 255) if mode == "mixed" else (0, 255)
    magnitude = np.clip(magnitude, low, high)
    cut = 8 - num_weight_bits + signed
    magnitude = (magnitude >> cut) << cut if cut > 0 else magnitude
    stored = -magnitude if mode == "inhibitory" else magnitude
    if np.any(stored % (1 << scale_bits)):
        return None, num_weight_bits, exponent
    return stored >> scale_bits, num_weight_bits, exponent


# --- layers ---------------------------------------------------------------------------------------

LAVA_MAX_DELAY = 62         # netx clamps longer delays to 62 steps (with a warning), as Loihi holds them
INPUT_DRIVES = ("bias", "spikes")
TIMINGS = ("layer-reset", "free-running")
PIXEL_TRANSFORM = {"weight": 64, "bias": 0}   # netx's Input block defaults (weight 1.0, bias 0 in 1/64 units)


def _identity_weight(shape: tuple[int, ...], where: str) -> tuple[str, np.ndarray, dict]:
    """(op, weight, attrs) of a synapse that passes each input element to one neuron: how snnc holds
    netx's Input block, whose neurons take the input without a synapse."""
    if len(shape) == 3:
        return "conv2d", np.eye(shape[0], dtype=np.int64)[:, :, None, None], \
            {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0]}
    if len(shape) == 1:
        check_weight_count(shape[0] ** 2, f"{where}: input neurons")
        return "linear", np.eye(shape[0], dtype=np.int64), {}
    raise InputError(f"{where}: an input layer with neurons of shape {list(shape)} (netx input neurons are "
                     f"(C, H, W) or (N,))")


def _synapse_delays(group, out_size: int, in_size: int, where: str) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """A dense layer's netx delays as (per output neuron, per input element), read as netx reads them:
    truncated to integers, clamped to 0..62, one value, one per output neuron (checked first, as netx
    does), one per input, or a matrix [out, in] whose rows or columns are all equal."""
    delay = _value(group, "delay")
    if delay is None:
        return None, None
    delay = np.asarray(delay)
    if not np.all(np.isfinite(delay)):
        raise InputError(f"{where}: delays must be finite numbers")
    delay = delay.astype(np.int64)
    if np.any(delay < 0):
        raise InputError(f"{where}: negative delay {int(delay.min())}")
    delay = np.minimum(delay, LAVA_MAX_DELAY)
    if delay.size == 1:
        return np.full(out_size, int(delay.ravel()[0])), None
    if delay.ndim == 1 and delay.size == out_size:
        return delay, None
    if delay.ndim == 1 and delay.size == in_size:
        return None, delay
    if delay.shape == (out_size, in_size):
        if np.all(delay == delay[:, :1]):
            return delay[:, 0].copy(), None
        if np.all(delay == delay[:1, :]):
            return None, delay[0].copy()
        raise InputError(f"{where}: a delay per synapse that is neither per neuron nor per input cannot be held "
                         f"(snnc's delays are per input element)")
    raise InputError(f"{where}: delays of shape {list(delay.shape)} fit neither the {out_size} neurons nor the "
                     f"{in_size} inputs")


class _Reader:
    """Builds the node chain. `lag` is the synapse latency modelled (1 for files lava-dl wrote, 0 for
    snnc's own); `axonal` holds, per node, the delay its outputs take to every consumer (netx's
    per-neuron delays of a layer, which snnc holds on the consumer's inputs)."""

    def __init__(self, path: Path, lag: int):
        self.path = path
        self.lag = lag
        self.nodes: list[Node] = []
        self.notes: list[str] = []
        self.axonal: dict[str, np.ndarray] = {}
        self.transform: Optional[dict] = None

    def where(self, index: int) -> str:
        return f"{self.path.name}: layer {index}"

    def last(self) -> Node:
        return self.nodes[-1]

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def flattened(self, index: int, note: bool) -> Node:
        """The last node as a dense layer reads it: flattened in (C, H, W) order, as netx's
        transpose([2, 1, 0]).flatten() of Lava's (x, y, c) order."""
        source = self.last()
        if len(source.shape) == 1:
            return source
        node = self.add(Node(name=f"flatten{index}", op="flatten", inputs=[source.name],
                             shape=(int(np.prod(source.shape)),)))
        if source.name in self.axonal:
            self.axonal[node.name] = self.axonal[source.name].reshape(-1)
        if note:
            self.notes.append(f"layer {index}: flatten inserted before the dense layer")
        return node

    def input_delay(self, source: Node, own: Optional[np.ndarray], lag: int) -> Optional[np.ndarray]:
        """Node.delay of a synapse reading `source`: the latency, the source neurons' axonal delays and
        the synapse's own per-input delays; None when all are 0."""
        delay = np.full(source.shape, lag, dtype=np.int64)
        if source.name in self.axonal:
            delay = delay + self.axonal[source.name].reshape(source.shape)
        if own is not None:
            delay = delay + own.reshape(source.shape)
        return delay if np.any(delay) else None

    def neuron(self, config: Optional[dict], shape: tuple[int, ...], bias, index: int, last: bool) -> Neuron:
        where = self.where(index)
        # a dense layer without neuron is netx's non-leaky integrator; snnc's exporter marks other
        # readout integrators (a CUBA neuron that cannot reach its threshold) with snnc_integrator
        integrator = config is None or bool(config.get("integrator", False))
        config = dict(DEFAULT_NEURON) if config is None else config
        kind = config.get("type", "CUBA")
        if kind not in NEURON_TYPES:
            raise InputError(f"{where}: neuron type '{kind}' is not supported (CUBA/LOIHI LIF and SDNN sigma-delta; "
                             f"resonate-and-fire neurons are not)")
        if kind == "SDNN":
            return self.sigma_delta(config, shape, bias, index, last, encoder=False)
        for key in ("iDecay", "vDecay", "vThMant"):
            if key not in config:
                raise InputError(f"{where}: neuron has no {key}")
        bits = int(np.max(config.get("messageBits", 0)))
        if bool(np.any(config.get("gradedSpike", False))) or bits > 0:
            self.notes.append(f"layer {index}: graded spikes ({bits} message bits) read as the spikes Lava's LIF "
                              f"sends, 0 or 1 (netx only widens the next synapse's messages)")
        decays = {}
        for key in ("iDecay", "vDecay"):
            values = np.asarray(config[key]).astype(np.int64)
            if values.size and not np.all(values == values.ravel()[0]):
                raise InputError(f"{where}: per-neuron {key} is not supported (one decay per layer)")
            decays[key] = int(values.ravel()[0])
            if not 0 <= decays[key] <= DECAY_UNITY:
                raise InputError(f"{where}: {key} = {decays[key]} is outside 0..{DECAY_UNITY}")
        if np.any(np.asarray(config.get("wgtExp", 0)) != 0):
            self.notes.append(f"layer {index}: wgtExp {np.asarray(config['wgtExp']).ravel()[0]} ignored: netx uses the "
                              f"exported integer weights as they are")
        ref_delay = np.asarray(config.get("refDelay", 1))
        if np.any(ref_delay > 1):
            self.notes.append(f"layer {index}: refDelay {int(np.max(ref_delay))} ignored (netx and Lava's LIF "
                              f"have no refractory period)")
        bias_full = np.zeros(shape, dtype=np.int64)
        if bias is not None:
            bias_full = self.broadcast_bias(bias, shape, index) << BIAS_EXP
        if integrator:
            if not last:
                raise InputError(f"{where}: a dense layer without neuron is only supported as the last "
                                 f"layer (netx makes it a non-spiking integrator)")
            return Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=bias_full,
                          initial_state=np.zeros(shape, dtype=np.int64),
                          v_decay=decays["vDecay"], u_decay=_current_decay(decays["iDecay"]))
        vth = np.asarray(config["vThMant"]).astype(np.int64)
        if np.any(vth < 0) or np.any(vth >= 1 << fixedpoint.LAVA_LIF_THRESHOLD_BITS):
            raise InputError(f"{where}: vThMant {vth.ravel()[:3].tolist()} is outside Loihi's "
                             f"{fixedpoint.LAVA_LIF_THRESHOLD_BITS} bits")
        threshold = self.broadcast_bias(vth, shape, index) << THRESHOLD_SHIFT
        return Neuron(kind="spiking", threshold=np.ascontiguousarray(threshold), reset="hard", reset_amount=None,
                      bias=bias_full, initial_state=np.zeros(shape, dtype=np.int64),
                      v_decay=decays["vDecay"], u_decay=_current_decay(decays["iDecay"]))

    def sigma_delta(self, config: dict, shape: tuple[int, ...], bias, index: int, last: bool,
                    encoder: bool) -> Neuron:
        """netx's SDNN neuron as Lava runs it (lava.proc.sdn): the input layer's Delta encoder, a
        sigma_output layer's Sigma (the readout: sigma += input, sent as it is), else SigmaDelta with
        ReLU (netx passes no activation mode: Lava's default ReLU whatever the file says)."""
        where = self.where(index)
        zeros = np.zeros(shape, dtype=np.int64)
        if "sigma_output" in config and bool(np.any(config["sigma_output"])):
            if not last or bias is not None:
                raise InputError(f"{where}: a sigma_output layer must be the last layer and has no bias "
                                 f"(netx makes it Lava's Sigma)")
            return Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None, bias=zeros,
                          initial_state=zeros.copy(), v_decay=0, u_decay=_current_decay(DECAY_UNITY),
                          input_shift=0)
        if "vThMant" not in config:
            raise InputError(f"{where}: SDNN neuron has no vThMant")
        vth = np.asarray(config["vThMant"]).astype(np.int64)
        if vth.size != 1 or int(vth.ravel()[0]) < 0 or int(vth.ravel()[0]) >= 1 << fixedpoint.LAVA_LIF_THRESHOLD_BITS:
            raise InputError(f"{where}: SDNN vThMant must be one value in 0..2^{fixedpoint.LAVA_LIF_THRESHOLD_BITS} - 1, "
                             f"got {vth.ravel()[:3].tolist()}")
        activation = str(config.get("activation", "relu")).lower()
        if not encoder and activation != "relu":
            self.notes.append(f"layer {index}: activation '{activation}' read as ReLU, as netx runs every "
                              f"SigmaDelta neuron")
        bits = int(np.max(config.get("messageBits", 16)))
        if bits != 16:
            self.notes.append(f"layer {index}: messageBits {bits}: messages are not truncated, as in Lava's "
                              f"simulator")
        threshold = np.full(shape, int(vth.ravel()[0]) << SDNN_SCALE_SHIFT, dtype=np.int64)
        scaled_bias = zeros if bias is None or encoder else self.broadcast_bias(bias, shape, index) << SDNN_SCALE_SHIFT
        return Neuron(kind="sigma_delta", threshold=threshold, reset="none", reset_amount=None, bias=scaled_bias,
                      initial_state=zeros.copy(), activation="identity" if encoder else "relu",
                      accumulate=not encoder, input_shift=SDNN_SCALE_SHIFT if encoder else 0,
                      message_shift=SDNN_STATE_EXP)

    def broadcast_bias(self, values: np.ndarray, shape: tuple[int, ...], index: int) -> np.ndarray:
        """A netx per-layer array: one value, one per channel, or one per neuron."""
        values = np.asarray(values).astype(np.int64)
        if values.size == 1:
            return np.full(shape, int(values.ravel()[0]), dtype=np.int64)
        if values.size == shape[0] and len(shape) > 1 and values.ndim <= 1:
            return np.broadcast_to(values.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
        if values.size == int(np.prod(shape)):
            if values.ndim == 3 and len(shape) == 3 and tuple(values.shape) == tuple(shape[::-1][:2]) + (shape[0],):
                return np.ascontiguousarray(values.transpose(2, 1, 0))  # Lava's (x, y, c) order
            return values.reshape(shape).copy()
        raise InputError(f"{self.where(index)}: array of {values.size} values does not fit the layer {list(shape)}")

    def input_neurons(self, group, index: int, drive: str) -> None:
        """netx's Input block: neurons that take the network input directly (drive 'spikes'), or
        the image as their bias (drive 'bias': bias_mant = the input unit, so u holds no memory);
        the block's weight and bias are the transform lava-dl leaves to the user (pixel -> bias_mant)."""
        where = self.where(index)
        source = self.last()
        op, weight, attrs = _identity_weight(source.shape, where)
        config = _neuron_config(group, where)
        if config.get("type") == "SDNN":   # a Delta encoder, which takes the input values into its a_in
            neuron = self.sigma_delta(config, source.shape, None, index, last=False, encoder=True)
        else:
            neuron = self.neuron(config, source.shape, None, index, last=False)
            if drive == "bias":
                neuron.u_decay = DECAY_UNITY - 1
            self.transform = {key: int(np.asarray(_value(group, key, default)).ravel()[0])
                              for key, default in PIXEL_TRANSFORM.items()}
        self.add(Node(name=f"{source.name}_neurons", op=op, inputs=[source.name], shape=source.shape,
                      weight=weight, attrs=attrs, neuron=neuron))

    def dense(self, group, index: int, last: bool, recurrent: bool = False) -> None:
        where = self.where(index)
        if "weight" not in group:
            raise InputError(f"{where}: dense layer without weight (complex weights are not supported)")
        weight = _int_array(group, "weight")
        out_features = int(np.prod(_shape(group))) if "shape" in group else int(weight.shape[0])
        if weight.ndim == 1:
            if weight.size % out_features:
                raise InputError(f"{where}: {weight.size} weights do not connect to {out_features} neurons")
            weight = weight.reshape(out_features, -1)
        source = self.flattened(index, note=True)
        if weight.shape != (out_features, source.shape[0]):
            raise InputError(f"{where}: weight {list(weight.shape)} does not connect {source.shape[0]} inputs "
                             f"to {out_features} neurons")
        feedback = None
        if recurrent:
            feedback = _int_array(group, "weight_rec").reshape(out_features, -1)
            if feedback.shape != (out_features, out_features):
                raise InputError(f"{where}: weight_rec {list(feedback.shape)} is not [{out_features}, {out_features}]")
        together = weight if feedback is None else np.hstack([weight, feedback])   # netx scales them together
        effective, bits, exponent = lava_dense_weights(together)
        if effective is None or not np.array_equal(effective, together):
            raise InputError(f"{where}: weights in [{together.min()}, {together.max()}] do not pass Lava's 8-bit "
                             f"synapse unchanged (netx weight exponent {exponent})")
        per_neuron, per_input = _synapse_delays(group, out_features, source.shape[0], where)
        shape = (out_features,)
        config = _neuron_config(group, where)
        if last and config is not None and bool(group.attrs.get("snnc_integrator", False)):
            config = dict(config, integrator=True)
        neuron = self.neuron(config, shape, _value(group, "bias"), index, last)
        name = _name(group, f"dense{index}")
        if per_neuron is not None and np.any(per_neuron):
            if np.any(neuron.bias) or neuron.kind != "spiking" or recurrent:
                raise InputError(f"{where}: per-neuron delays are held as axonal delays of the layer's spikes, "
                                 f"exact only for a spiking layer without bias or recurrence")
            self.axonal[name] = per_neuron.reshape(shape)
        self.add(Node(name=name, op="linear", inputs=[source.name], shape=shape, weight=weight,
                      neuron=neuron, recurrent=feedback, delay=self.input_delay(source, per_input, self.lag)))

    def conv(self, group, index: int, last: bool) -> None:
        where = self.where(index)
        source = self.last()
        if len(source.shape) != 3:
            raise InputError(f"{where}: conv layer after an input of shape {list(source.shape)}")
        weight = _int_array(group, "weight")
        if weight.ndim == 5:
            weight = weight.reshape(weight.shape[:4])
        if weight.ndim != 4:
            raise InputError(f"{where}: conv weight must be [out, in, kH, kW], got {list(weight.shape)}")
        groups = _integer(group, "groups") if "groups" in group else 1
        dilation = _pair(group, "dilation", 1, where)
        stride = _pair(group, "stride", 1, where)
        padding = _pair(group, "padding", 0, where)
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
        if groups < 1 or weight.shape[1] * groups != source.shape[0]:
            raise InputError(f"{where}: conv weight {list(weight.shape)} in {groups} group(s) does not fit "
                             f"{source.shape[0]} input channels")
        shape = conv_output_shape(source.shape, int(weight.shape[0]), kernel, stride, padding, where, dilation, groups)
        attrs = {"kernel": list(kernel), "stride": list(stride), "padding": list(padding)}
        if dilation != (1, 1):
            attrs["dilation"] = list(dilation)
        if groups != 1:
            attrs["groups"] = groups
            self.notes.append(f"layer {index}: grouped convolution ({groups} groups): the mapper and the cycle "
                              f"simulator count its synapses channel-dense, an upper bound ({groups} x its "
                              f"synapses and synaptic ops)")
        if "shape" in group and _shape(group) != shape:
            raise InputError(f"{where}: stored shape {list(_shape(group))} differs from the computed {list(shape)}")
        if "delay" in group:
            self.notes.append(f"layer {index}: conv delays ignored, as netx ignores them")
        neuron = self.neuron(_neuron_config(group, where), shape, _value(group, "bias"), index, last)
        self.add(Node(name=_name(group, f"conv{index}"), op="conv2d", inputs=[source.name], shape=shape, weight=weight,
                      attrs=attrs, neuron=neuron, delay=self.input_delay(source, None, self.lag)))

    def readout(self, name: str, weight: np.ndarray) -> Node:
        """An snnc readout integrator on the last spiking layer: it counts what reaches it (x 64),
        after the layer's axonal delays; no latency (netx has no such layer: its user counts the
        output spikes themselves)."""
        source = self.flattened(len(self.nodes), note=False)
        size = int(weight.shape[0])
        check_weight_count(weight.size, f"{self.path}: readout")
        shape = (size,)
        return self.add(Node(name=name, op="linear", inputs=[source.name], shape=shape, weight=weight,
                             delay=self.input_delay(source, None, 0),
                             neuron=Neuron(kind="integrator", threshold=None, reset="none", reset_amount=None,
                                           bias=np.zeros(shape, dtype=np.int64),
                                           initial_state=np.zeros(shape, dtype=np.int64),
                                           v_decay=0, u_decay=_current_decay(DECAY_UNITY))))

    def average(self, group, index: int) -> None:
        """slayer's Average block, the readout of population-coded outputs: class c is the mean of the
        c-th of `classes` equal, consecutive groups of the last layer's neurons. snnc reads out each
        group's spike sum (x 64), which orders the classes as the mean does."""
        classes = int(np.prod(_shape(group)))
        size = int(np.prod(self.last().shape))
        if not self.last().spiking or size % classes:
            raise InputError(f"{self.where(index)}: an average of {classes} classes needs a spiking layer whose "
                             f"neurons split into {classes} equal groups (it has {size})")
        weight = np.kron(np.eye(classes, dtype=np.int64), np.ones((1, size // classes), dtype=np.int64))
        self.readout(_name(group, f"average{index}"), weight)


def _refuse_input_shape(path: Path, input_shape, why: str) -> None:
    if input_shape is not None:
        raise UsageError(f"{path}: --input-shape applies only to a netx file without an input layer that "
                         f"starts with a conv layer; {why}")


def _input_encoding(reader: _Reader, drive: str, t_sample: Optional[int], T: int) -> dict:
    """What the network's input takes: binary spikes, or for bias-driven input neurons the integer
    bias mantissas (static images become them through the file's transform, docs/interop.md);
    a lava-dl file presents a static frame for its tSample steps, then lets the network drain."""
    first = reader.nodes[1].neuron if len(reader.nodes) > 1 else None
    if first is not None and first.kind == "sigma_delta" and not first.accumulate:
        top = fixedpoint.register_limit(LAVA_LIF_RULES["state_bits"]) >> first.input_shift
        encoding = {"kind": "direct", "min": -top, "max": top, "bits": top.bit_length() + 1,
                    "description": f"signed integers into the Delta encoder (x << {first.input_shift} fits its "
                                   f"{LAVA_LIF_RULES['state_bits']}-bit state); images: pixels as they are"}
    elif reader.transform is not None and drive == "bias":
        weight, bias = reader.transform["weight"], reader.transform["bias"]
        encoding = {"kind": "direct", "max": max(1, weight + bias), "bits": max(1, (weight + bias).bit_length()),
                    "pixel_transform": dict(reader.transform),
                    "description": f"bias-driven input neurons: bias_mant = {weight} x pixel / 255 + {bias} "
                                   f"(rounded down) for images; data files give bias_mant per step"}
    else:
        encoding = dict(SPIKE_ENCODING)
    if reader.lag and t_sample is not None and T > t_sample:
        encoding["present_steps"] = int(t_sample)
    return encoding


LAYER_TYPES = ("input", "dense", "dense_rec", "conv", "flatten", "average")


def load_netx(path, T: Optional[int] = None, *, target="loihi2", encoding: Optional[dict] = None,
              input_shape: Optional[tuple[int, ...]] = None, input_drive: str = "bias",
              timing: Optional[str] = None) -> Network:
    """A fixed-point snnc Network from a lava-dl netx HDF5 file (bit-exact netx/Lava LIF semantics).

    T: steps per sample (default: the file's simulation/tSample, plus for a file lava-dl wrote the
    steps its pipeline needs to drain; else required). target: whose register widths to use (must be
    Lava's CUBA widths). encoding: what the input receives (default: binary spikes, or the bias
    mantissas of bias-driven input neurons). input_drive: how input neurons are driven, 'bias' (the
    image as their bias, lava-dl's usual way) or 'spikes' (input spikes into their a_in). timing:
    'layer-reset' (default) or 'free-running', see the module docstring. The input's
    shape is the file's: its input layer, else the first dense layer's inFeatures; input_shape
    (C, H, W) is only for a file without an input layer that starts with a conv layer.
    """
    import h5py

    from snnc.targets import Target, load_target

    if input_drive not in INPUT_DRIVES:
        raise UsageError(f"netx input drive must be one of {INPUT_DRIVES}, got {input_drive!r}")
    if timing is not None and timing not in TIMINGS:
        raise UsageError(f"netx timing must be one of {TIMINGS}, got {timing!r}")
    target = target if isinstance(target, Target) else load_target(target)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such netx file")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path}: not an HDF5 file ({error})")
    with handle:
        if "layer" not in handle:
            raise InputError(f"{path}: no 'layer' group: not a lava-dl netx network")
        layers = handle["layer"]
        try:
            indices = sorted(int(key) for key in layers.keys())
        except ValueError:
            raise InputError(f"{path}: layer names must be 0..n-1, got {sorted(layers.keys())[:5]}")
        if indices != list(range(len(indices))) or not indices:
            raise InputError(f"{path}: layers must be numbered 0..n-1")
        snnc_attrs = dict(handle["snnc"].attrs) if "snnc" in handle else {}
        simulation = handle["simulation"] if "simulation" in handle else {}
        t_sample = _integer(simulation, "tSample") if "tSample" in simulation else None
        if "Ts" in simulation and _numbers(simulation, "Ts").ravel()[0] != 1:
            raise InputError(f"{path}: simulation/Ts = {_numbers(simulation, 'Ts').ravel()[0]}: netx runs one "
                             f"Lava step per sample step, so only Ts = 1 is read")
        if T is None and t_sample is None:
            raise InputError(f"{path}: the file gives no simulation/tSample: pass T")
        lava_dl_file = "snnc" not in handle
        lag = int(timing == "free-running") if lava_dl_file else _stored_latency(snnc_attrs)
        if not lava_dl_file:
            input_drive = _stored_drive(snnc_attrs, input_drive)
        reader = _Reader(path, lag=lag)
        kinds = []
        for index in indices:
            kind = _text(layers[str(index)]["type"]).lower() if "type" in layers[str(index)] else "(none)"
            if kind not in LAYER_TYPES:
                raise InputError(f"{reader.where(index)}: netx layer type '{kind}' is not supported "
                                 f"(snnc reads {', '.join(LAYER_TYPES)})")
            kinds.append(kind)
        synaptic = [i for i, kind in enumerate(kinds) if kind in ("dense", "dense_rec", "conv")]
        if not synaptic:
            raise InputError(f"{path}: no dense or conv layer")
        for index in indices:
            group, kind, where = layers[str(index)], kinds[index], reader.where(index)
            last = index == synaptic[-1]
            if index > synaptic[-1] and not (kind == "average" and index == len(indices) - 1):
                raise InputError(f"{where}: '{kind}' after the last dense/conv layer is not supported "
                                 f"(only an average readout may follow it)")
            if kind == "input":
                if index != 0:
                    raise InputError(f"{where}: input layer must be layer 0")
                shape = _shape(group)
                _refuse_input_shape(path, input_shape, f"its input layer is {list(shape)}")
                reader.add(Node(name=_name(group, "input"), op="input", inputs=[], shape=shape))
                if "neuron" in group:
                    reader.input_neurons(group, index, input_drive)
                continue
            if not reader.nodes:
                if kind in ("dense", "dense_rec"):
                    width = _integer(group, "inFeatures") if "inFeatures" in group \
                        else _numbers(group, "weight").shape[-1]
                    shape = check_shape([width], where)
                    _refuse_input_shape(path, input_shape, f"its first dense layer takes {list(shape)}")
                elif input_shape is not None:
                    shape = check_shape(list(input_shape), f"{path}: --input-shape")
                else:
                    raise InputError(f"{path}: no input layer and no dense layer first: pass --input-shape C,H,W")
                reader.add(Node(name="input", op="input", inputs=[], shape=shape))
            if kind in ("dense", "dense_rec"):
                reader.dense(group, index, last, recurrent=kind == "dense_rec")
            elif kind == "conv":
                reader.conv(group, index, last)
            elif kind == "flatten":
                reader.flattened(index, note=False)
            elif kind == "average":
                reader.average(group, index)
        if T is None and lava_dl_file:   # free-running: the steps the last input takes to reach the output
            T = t_sample + reader.lag * sum(int(node.delay.max()) for node in reader.nodes if node.delay is not None)
        T = check_steps(t_sample if T is None else T, f"{path}: netx network")
    nodes = reader.nodes
    readout = str(snnc_attrs.get("readout", "last"))
    if kinds[-1] == "average":
        readout_rule = "average readout: the spike count of each class's group of neurons (x 64)"
        readout = "last"
    elif nodes[-1].spiking:
        # netx networks classify by counting output spikes: an identity readout counts them.
        size = int(np.prod(nodes[-1].shape))
        reader.readout(str(snnc_attrs.get("count_readout", "readout")), np.eye(size, dtype=np.int64))
        readout_rule = "identity readout appended: readout = 64 x the sum of the last layer's spikes (messages)"
        readout = "last"
    elif nodes[-1].neuron.input_shift == 0:
        readout_rule = "the sigma_output layer (Lava's Sigma) is the readout: the sum of its input"
    else:
        readout_rule = "the last dense layer has no neuron: netx's non-leaky integrator is the readout"
        if len(nodes[-1].shape) != 1:
            raise InputError(f"{path}: the readout layer must be dense")
    if reader.axonal.keys() - {name for node in nodes for name in node.inputs}:
        raise InputError(f"{path}: the output layer's per-neuron delays reach no consumer snnc can delay")
    if readout not in ("mean", "last"):
        raise InputError(f"{path}: snnc readout attribute {readout!r} is not 'mean' or 'last'")
    warnings = []
    if lava_dl_file and timing is None and any(np.any(node.neuron.bias) for node in nodes[1:] if node.neuron):
        warnings.append("netx timing: 'layer-reset' assumed (each layer starts a sample at rest, as slayer "
                        "and netx.hdf5.Network(reset_interval=...) run it); pass --netx-timing free-running "
                        "for netx.hdf5.Network without reset, whose biases act while the input is in flight")
    name = str(snnc_attrs.get("name", path.stem))
    semantics = {"profile": "lava-dl netx" if lava_dl_file else "snnc netx",
                 "timing": (timing or "layer-reset") if lava_dl_file else ("free-running" if lag else "snnc logical time"),
                 "assumed": ["timing"] if warnings else [], "warnings": warnings,
                 **({"input_drive": input_drive, "transform": reader.transform} if reader.transform else {})}
    metadata = {"source": "netx", "target": target.name,
                "netx": {"file": path.name, "readout": readout_rule, "notes": reader.notes, "tSample": t_sample,
                         "semantics": semantics}}
    chosen = encoding or _stored_encoding(snnc_attrs) or _input_encoding(reader, input_drive, t_sample, T)
    net = Network(name=name, T=int(T), readout=readout, nodes=nodes, arithmetic=netx_arithmetic(target),
                  encoding=dict(chosen), metadata=metadata)
    net.validate()
    return net
