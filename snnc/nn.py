"""Training-time spiking layers (float), multi-step: every tensor is shaped [T, B, ...].

Per step t, with U[0] = 0 or the learnable IMP:
  charge  IF: H = U + X;  LIF: H = beta*U + X (or beta*U + X/tau with decay_input), beta = 1 - 1/tau
  fire    O = 1 if phi(H) >= Vth else 0, phi = MPR or identity (MPR never changes U)
  reset   hard: U = H*(1 - O);  soft: U = H - reset_amount*O
Layer attributes stay plain Python values (floats, strings, bools) because the compiler reads them
to build its integer model.
"""
import math

import torch
from torch import nn

NEURON_KINDS = ("if", "lif")
RESETS = ("hard", "soft")
READOUT_MODES = ("mean", "last")

_MPR_MID_SCALE = 2.0 * math.tanh(1.5)


def mpr(u):
    """Membrane potential rectifier phi (InfLoR): pulls potentials towards the spike values 0 and 1.

    Each branch sees its input clamped to its own interval: torch.where evaluates all branches
    everywhere, and an unclamped cube root of a negative number gives NaN values and NaN gradients.
    """
    below = 1.0 - (1.0 - u.clamp(max=0.0)).pow(1.0 / 3.0)
    middle = torch.tanh(3.0 * (u.clamp(0.0, 1.0) - 0.5)) / _MPR_MID_SCALE + 0.5
    above = u.clamp(min=1.0).pow(1.0 / 3.0)
    return torch.where(u < 0.0, below, torch.where(u > 1.0, above, middle))


def mpr_inverse(v):
    """Exact inverse of `mpr` for a float, so that phi(H) >= Vth <=> H >= mpr_inverse(Vth)."""
    v = float(v)
    if v < 0.0:
        return 1.0 - (1.0 - v) ** 3
    if v > 1.0:
        return v**3
    return 0.5 + math.atanh((v - 0.5) * _MPR_MID_SCALE) / 3.0


class _SpikeFunction(torch.autograd.Function):
    """Heaviside step Theta(x) = [x >= 0] forward; arctan surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        surrogate = (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x).square())
        return grad_output * surrogate, None


class SpikingNeuron(nn.Module):
    """IF / LIF neuron with hard or soft reset, optional MPR and optional learnable IMP.

    kind 'if' + reset 'soft' + reset_amount 1.0 is InfLoR's SRIF. Gradients also flow through the
    reset term (it is not detached, as in SpikingJelly's default), so BPTT sees the whole dynamics.
    """

    def __init__(self, kind="if", vth=0.5, tau=2.0, decay_input=False, reset="hard",
                 reset_amount=1.0, mpr=False, imp_shape=None, surrogate_alpha=2.0):
        super().__init__()
        if kind not in NEURON_KINDS:
            raise ValueError(f"neuron kind must be one of {NEURON_KINDS}, got {kind!r}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        if kind == "lif" and not tau > 1.0:
            raise ValueError(f"LIF needs tau > 1, got {tau}")
        self.kind = kind
        self.vth = float(vth)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.reset = reset
        self.reset_amount = float(reset_amount)
        self.mpr = bool(mpr)
        self.surrogate_alpha = float(surrogate_alpha)
        if imp_shape is None:
            self.imp = None
        else:
            self.imp = nn.Parameter(torch.zeros(tuple(imp_shape)))

    def charge(self, u, x):
        """H[t] from U[t-1] and X[t]."""
        if self.kind == "if":
            return u + x
        beta = 1.0 - 1.0 / self.tau
        return beta * u + (x / self.tau if self.decay_input else x)

    def forward(self, x):
        u = torch.zeros_like(x[0]) if self.imp is None else self.imp.expand_as(x[0])
        spikes = []
        for x_t in x:
            h = self.charge(u, x_t)
            drive = mpr(h) if self.mpr else h
            o = _SpikeFunction.apply(drive - self.vth, self.surrogate_alpha)
            u = h * (1.0 - o) if self.reset == "hard" else h - self.reset_amount * o
            spikes.append(o)
        return torch.stack(spikes)

    def extra_repr(self):
        imp = "none" if self.imp is None else tuple(self.imp.shape)
        return (f"kind={self.kind}, vth={self.vth}, tau={self.tau}, decay_input={self.decay_input}, "
                f"reset={self.reset}, reset_amount={self.reset_amount}, mpr={self.mpr}, imp={imp}")


class TdBN(nn.modules.batchnorm._BatchNorm):
    """Threshold-dependent BN (Zheng et al. 2021): statistics over time, batch and space jointly.

    It is a plain torch BatchNorm applied to the input merged to [T*B, C, ...], with the scale
    initialised to alpha*Vth, so its inference map y = a*x + b folds into the compiled network.
    """

    _MERGED_DIMS = {"2d": 4, "1d": 2}

    def __init__(self, num_features, vth, alpha=1.0, kind="2d"):
        if kind not in self._MERGED_DIMS:
            raise ValueError(f"TdBN kind must be '2d' or '1d', got {kind!r}")
        super().__init__(num_features)
        self.kind = kind
        self.vth = float(vth)
        self.alpha = float(alpha)
        nn.init.constant_(self.weight, self.alpha * self.vth)

    def _check_input_dim(self, input):
        if input.dim() != self._MERGED_DIMS[self.kind]:
            expected = self._MERGED_DIMS[self.kind] + 1
            raise ValueError(f"TdBN({self.kind}) expects {expected}-d [T, B, C, ...] input, "
                             f"got {input.dim() + 1}-d")

    def forward(self, x):
        steps, batch = x.shape[:2]
        return super().forward(x.flatten(0, 1)).unflatten(0, (steps, batch))


class Readout(nn.Module):
    """Non-spiking output integrator: y[t] = y[t-1] + x[t], y[0] = 0, no threshold, no reset."""

    def __init__(self, mode="mean"):
        super().__init__()
        if mode not in READOUT_MODES:
            raise ValueError(f"readout mode must be one of {READOUT_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x):
        return torch.cumsum(x, dim=0)

    def reduce(self, y):
        """Class scores from the per-step values: mean over t of y[t], or the last y[T]."""
        return y.mean(dim=0) if self.mode == "mean" else y[-1]

    def extra_repr(self):
        return f"mode={self.mode}"
