"""The CLI answers --help without importing torch, lava or onnxruntime (they take seconds)."""
import json
import subprocess
import sys

PROBE = """
import json, sys
from click.testing import CliRunner
from snnc.cli import main
runner = CliRunner()
commands = [[]] + [[name] for name in main.commands] + [["targets", "show"]]
codes = [runner.invoke(main, args + ["--help"]).exit_code for args in commands]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lava", "onnxruntime", "onnx"))
print(json.dumps({"commands": len(commands), "codes": codes, "heavy": heavy}))
"""


def test_help_never_imports_heavy_packages():
    result = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                       check=True).stdout)
    assert result["commands"] == 11  # the group, 9 commands, targets show
    assert set(result["codes"]) == {0}
    assert result["heavy"] == []
