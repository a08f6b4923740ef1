"""The README's Extending example, exactly as printed: its code registers an objective with its own
option, the README's --set line selects it, and a real condensation on config/smoke.yaml runs it."""
from __future__ import annotations

import json
import re
import sys
import types

from condense import condense_script_text
from tests.conftest import ROOT, SMOKE


def readme_extending() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Extending"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    objectives = re.search(r'--set "(condense\.objectives=.*?)"', section).group(1)
    return code, objectives


def test_readme_extending_example_runs(tmp_path, smoke_experts):
    code, objectives = readme_extending()
    assert len(code.strip().splitlines()) <= 30           # a short example, as the issue asks
    module = types.ModuleType("readme_example")               # dataclasses look their module up
    sys.modules[module.__name__] = module
    exec(compile(code, "README.md", "exec"), module.__dict__)
    out = tmp_path / "run"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--niter", "2", "--set", objectives]) == 0
    history = json.loads((out / "loss_history.json").read_text())
    assert [round(h["l2_loss"], 6) > 0 for h in history] == [True, True]
    assert "options" in (out / "args.log").read_text() and "power: 2" in (out / "args.log").read_text()
