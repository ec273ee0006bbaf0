"""The three layers (STYLE.md rule 1 and 3): engine/ never imports streamlit; the Streamlit process stays light."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_streamlit():
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "engine").rglob("*.py") if "streamlit" in imported_modules(p)
    ]
    assert offenders == []


def test_pages_do_not_import_training_libraries_at_top_level():
    for page in [REPO / "app.py", *(REPO / "app_pages").glob("*.py"), *(REPO / "ui").glob("*.py")]:
        top = {
            n.names[0].name.split(".")[0] if isinstance(n, ast.Import) else (n.module or "").split(".")[0]
            for n in ast.parse(page.read_text()).body
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        assert not top & HEAVY, f"{page.name} imports {top & HEAVY}"


def test_rendering_every_page_loads_no_training_library():
    """Run the whole app in AppTest in a fresh interpreter and look at what got imported."""
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=60); at.run()
for page in ["goal", "hardware", "estimate", "data", "train", "runs", "try_export"]:
    at.switch_page(f"app_pages/{{page}}.py"); at.run()
    assert not at.exception, (page, at.exception)
print(sorted({sorted(HEAVY)!r} and set(m.split('.')[0] for m in sys.modules) & set({sorted(HEAVY)!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
