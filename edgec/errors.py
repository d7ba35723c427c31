"""Error types that reach the user as one line and a distinct exit code."""


class EdgecError(Exception):
    """A problem with what the user gave us (model, target, pipeline, plugin): exit code 2."""

    exit_code = 2


class ModelLoadError(EdgecError):
    """The file is missing or is not a model we can read."""


class PipelineError(EdgecError):
    """Pipeline text that does not parse, or names an unknown pass or option."""


class PluginError(EdgecError):
    """A plugin failed to import, or raised inside the pass it provides."""


class PassError(EdgecError):
    """A pass raised or broke its contract; the message names the pass and where it ran."""


class CheckFailed(EdgecError):
    """The numeric equivalence check refused a pass: the input was fine, the build is not.

    Exit code 1 tells a CI job "the model regressed" apart from "the command was wrong" (2).
    """

    exit_code = 1

    def __init__(self, message: str, record=None):
        super().__init__(message)
        self.record = record


class BudgetExceeded(EdgecError):
    """The build ran past its time budget (--timeout): exit code 1, like a failed check."""

    exit_code = 1


class InternalPassError(PassError):
    """A built-in pass crashed or broke its contract: edgec's own bug, exit code 3."""

    exit_code = 3


class InternalError(EdgecError):
    """edgec's own bug caught where it can be named (e.g. a backend cannot run what it wrote): exit
    code 3, shown as "internal error ... run with --debug". Anything that is not an EdgecError is
    treated the same way by the command."""

    exit_code = 3
