"""Exceptions for libdpk statuses. Each carries the C message and the status name."""

from __future__ import annotations


class DpkError(Exception):
    """A libdpk call failed; `status` is the C status name (e.g. "NOT_FOUND")."""

    status = "UNKNOWN"

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(DpkError, ValueError):
    status = "INVALID_ARGUMENT"


class NotFoundError(DpkError, KeyError):
    status = "NOT_FOUND"


class OutOfRangeError(DpkError, IndexError):
    status = "OUT_OF_RANGE"


class DataLossError(DpkError):
    status = "DATA_LOSS"


class UnimplementedError(DpkError, NotImplementedError):
    status = "UNIMPLEMENTED"


class ResourceExhaustedError(DpkError, MemoryError):
    status = "RESOURCE_EXHAUSTED"


class InternalError(DpkError, RuntimeError):
    status = "INTERNAL"


class FailedPreconditionError(DpkError):
    status = "FAILED_PRECONDITION"


class AlreadyExistsError(DpkError):
    status = "ALREADY_EXISTS"


class UnauthenticatedError(DpkError):
    """A public key was given and the file is unsigned, signed by another key,
    changed after signing, or its signature trailer is malformed."""

    status = "UNAUTHENTICATED"


BY_CODE = {
    1: InvalidArgumentError,
    2: NotFoundError,
    3: OutOfRangeError,
    4: DataLossError,
    5: UnimplementedError,
    6: ResourceExhaustedError,
    7: InternalError,
    8: FailedPreconditionError,
    9: AlreadyExistsError,
    10: UnauthenticatedError,
}
