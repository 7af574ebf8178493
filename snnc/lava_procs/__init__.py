"""snnc's own Lava processes (neurons, relays, a memmap sink) and their fixed-point models.

Kept deliberately tiny: when Lava compiles a graph it looks for process models by executing every
.py file in the folder of the process's module and in the package that contains it (see
docs/lava.md). The processes live in `process.py` (so the package searched is this one, not
`snnc`, whose modules import torch) and every file here uses absolute imports of numpy and lava
only, with no side effects at import.
"""
