"""One error type for the whole project: every failure a user can cause or fix is a `SpnasError`.

Each subclass carries the exit code the command-line tools use for it, so scripts can tell a bad
config (2) from a missing input (3), a bad latency table (4), a refused export (5), a phone that
went away (6), a retrieval index problem (7) and a run folder in an unexpected state (8). Anything
else that escapes is a bug (exit 1, with a traceback). Subclasses also derive from the built-in
type they refine (ValueError, FileNotFoundError, ...) so `except ValueError` keeps working.
"""

from __future__ import annotations

EXIT_BUG = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_TABLE = 4
EXIT_EXPORT = 5
EXIT_DEVICE = 6
EXIT_RETRIEVAL = 7
EXIT_RUN_STATE = 8


class SpnasError(Exception):
    """Base of every project error: a message saying what failed and what to do next."""

    exit_code: int = EXIT_INPUT

    def one_line(self) -> str:
        """The message on one line (what the CLIs print)."""
        return " ".join(part.strip() for part in str(self).splitlines() if part.strip())


# ---------------------------------------------------------------------------------- configuration
class ConfigError(SpnasError, ValueError):
    """A configuration that does not compose: unknown key, wrong type, value outside its choices."""

    exit_code = EXIT_CONFIG


# ---------------------------------------------------------------------------------- inputs
class InputError(SpnasError, ValueError):
    """An input file or data set that is present but unusable (corrupt, malformed, inconsistent)."""


class InputNotFoundError(SpnasError, FileNotFoundError):
    """An input file or folder that does not exist."""


class DataNotFoundError(InputNotFoundError):
    """A data set root that does not exist or lacks the expected files."""


class ArchSpecError(SpnasError, ValueError):
    """An architecture string or spec that cannot describe a buildable network."""


class CheckpointError(InputError):
    """A checkpoint that is missing, corrupt, or does not match the architecture it claims."""


class ImageDecodeError(InputError):
    """A file that is not a decodable image (corrupt, truncated, or another format)."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than allowed (decompression-bomb guard)."""


# ---------------------------------------------------------------------------------- latency tables
class TableError(SpnasError, ValueError):
    """A latency table that is malformed or cannot serve a request."""

    exit_code = EXIT_TABLE


class TableNotFoundError(TableError, FileNotFoundError):
    """A latency table named (or given by path) that does not exist: a table problem (exit 4), not data."""


class OpKeyError(TableError):
    """A string that is not a well-formed op key."""


# ---------------------------------------------------------------------------------- export
class ExportError(SpnasError, RuntimeError):
    """An export that was refused (nothing was written)."""

    exit_code = EXIT_EXPORT


class ParityError(ExportError):
    """An exported artifact disagrees with the PyTorch model beyond its tolerance."""

    def __init__(self, message: str, failed: list[str] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []


# ---------------------------------------------------------------------------------- devices
class DeviceError(SpnasError, RuntimeError):
    """A profiling device (phone over adb, or this machine) that cannot do what was asked."""

    exit_code = EXIT_DEVICE


class DeviceDisconnected(DeviceError):
    """The phone went away (unplugged, offline, unauthorized) during profiling."""


class WrongABIError(DeviceError):
    """The benchmark binary cannot run on the phone's CPU."""


class BenchmarkOutputError(DeviceError, ValueError):
    """benchmark_model printed nothing a latency can be read from."""


class ModelRefusedError(BenchmarkOutputError):
    """The benchmark binary cannot run this model (an op it lacks, a tensor it cannot allocate)."""


class WrongSocError(DeviceError):
    """The connected phone is not the SoC the table is being measured for."""


# ---------------------------------------------------------------------------------- retrieval
class RetrievalError(SpnasError, ValueError):
    """A retrieval index or service request that cannot be served."""

    exit_code = EXIT_RETRIEVAL


class IndexMismatchError(RetrievalError):
    """An index built by another model bundle (its vectors live in another embedding space)."""


class DuplicateIdError(RetrievalError):
    """A listing id that is already active with another photo (delete it first, or use another id)."""


class StoreUnavailableError(RetrievalError):
    """The listing store did not answer; nothing was changed or acknowledged, retry once it answers."""


class VersionCorruptError(RetrievalError):
    """An index version whose files do not match its manifest (refused; rebuild or fetch it again)."""


# ---------------------------------------------------------------------------------- run folders
class RunStateError(SpnasError, FileExistsError):
    """A run folder in a state the command will not overwrite (e.g. an unfinished checkpoint)."""

    exit_code = EXIT_RUN_STATE
