"""Running the real CLI in-process and checking a failure the way docs/errors.md promises it: the
exit code, one `error:` line on stderr naming the problem, no traceback."""
from click.testing import CliRunner

from snnc.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
