"""dsopack-lut: an example of a third-party module kind for dsopack.

`LutBackend` (entry point `lut` in group `dsopack.backends`) takes sigmoid and
tanh nodes and lowers each region to a payload of kind `lut`: one sampled
table per node, applied with linear interpolation. The kind's C
(`lut_kind.c`) travels inside every model file built with it, so the stock
`dpk-run` and `loader` run those files unchanged.
"""

from dsopack_lut.backend import LutBackend
from dsopack_lut.payload import MAX_ERROR, TABLES, pack, unpack

__all__ = ["LutBackend", "MAX_ERROR", "TABLES", "pack", "unpack"]
