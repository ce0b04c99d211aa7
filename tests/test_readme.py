"""The README's quick start is what CI runs: exactly two commands, the second one verbatim in .ci/run."""

import re

from tests.conftest import PROJECT_ROOT


def quick_start_commands() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    app, tests = quick_start_commands()
    assert "\n" not in app and "\n" not in tests
    assert ".venv" in app and "streamlit run streamlit_app.py" in app
    assert ".venv" in tests and "pytest" in tests
    assert tests in (PROJECT_ROOT / ".ci" / "run").read_text()
