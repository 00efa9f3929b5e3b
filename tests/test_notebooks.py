"""Run every library notebook's tests (what `nbdev_test` runs) under pytest, one test per notebook.

Cells flagged with a `tst_flags` flag from settings.ini (`slow`, `gpu`) are skipped, as `nbdev_test` does;
`CRISSCROSS_NB_FLAGS="slow"` runs them too.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_NOTEBOOKS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))


def test_there_are_library_notebooks():
    assert len(LIBRARY_NOTEBOOKS) >= 5, f"expected the library notebooks in {ROOT / 'nbs'}"


@pytest.mark.parametrize("nb", LIBRARY_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook(nb, capsys):
    from nbdev.config import get_config
    from nbdev.test import test_nb

    cfg = get_config(path=ROOT)
    skip = cfg.get("tst_flags", "").split()
    force = os.environ.get("CRISSCROSS_NB_FLAGS", "").split()
    ok, _ = test_nb(nb, skip_flags=skip, force_flags=force, showerr=True)
    assert ok, f"{nb.name} failed; its traceback is above"
