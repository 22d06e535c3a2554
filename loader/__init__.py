"""dsopack's Python loader: a thin cffi wrapper over the C runtime libdpk.

    import loader
    with loader.load("digits.so") as model:
        probs = model.run(x=batch)["probs"]
"""

from loader.errors import (AlreadyExistsError, DataLossError, DpkError, FailedPreconditionError, InternalError,
                           InvalidArgumentError, NotFoundError, OutOfRangeError, ResourceExhaustedError,
                           UnauthenticatedError, UnimplementedError)
from loader.kinds import registered_kinds
from loader.model import Model, ModuleInfo, PackedFunction, TensorInfo, load
from loader.package import Package, open_package
from loader.shapes import Dim, Plan

__all__ = [
    "load", "open_package", "registered_kinds", "Model", "Package", "PackedFunction", "TensorInfo", "ModuleInfo",
    "Dim", "Plan", "DpkError",
    "InvalidArgumentError", "NotFoundError", "OutOfRangeError", "DataLossError", "UnimplementedError",
    "ResourceExhaustedError", "InternalError", "FailedPreconditionError", "AlreadyExistsError",
    "UnauthenticatedError",
]
