"""Errors that the CLI turns into one line on stderr and a documented exit code (docs/errors.md)."""


class SnncError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class CheckFailed(SnncError):
    """A gate failed: backends disagree, or an energy budget or regression limit was exceeded."""

    exit_code = 1


class UsageError(SnncError):
    """Options that contradict each other or name nothing to do (click's own usage errors share 2)."""

    exit_code = 2


class InputError(SnncError):
    """A missing, unreadable, corrupt or inconsistent input (checkpoint, recipe, data set, export)."""

    exit_code = 3


class TargetError(SnncError):
    """An unknown target name or an invalid target description."""

    exit_code = 4


class DesignRuleError(SnncError):
    """The network cannot be deployed on the target: it does not fit, or values overflow bit widths."""

    exit_code = 5


class OutputError(SnncError):
    """The output cannot be written: it already exists (without --force) or is not writable."""

    exit_code = 6
