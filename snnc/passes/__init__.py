"""IR-to-IR passes. Each takes a Network and returns a new one; the input is never modified."""
from snnc.passes.fold import fold_all, fold_bn, fold_decay_input, fold_mpr, fold_synapse_bias
from snnc.passes.quantize import bound_analysis, quantize

__all__ = ["fold_all", "fold_bn", "fold_decay_input", "fold_mpr", "fold_synapse_bias",
           "quantize", "bound_analysis"]
