"""Exporters: snnc networks written in other tools' formats (NIR graphs, lava-dl netx HDF5).

Import lazily: `from snnc.exporters.nir_export import export_nir`,
`from snnc.exporters.netx_export import export_netx` (docs/interop.md).
"""
