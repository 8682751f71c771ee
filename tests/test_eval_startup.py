"""What a one-case ``segkit eval`` imports: only what it uses (issue 9 item 7; timings in bench_startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from _helpers import write_nifti

# Each was on `segkit eval`'s start-up path and is not needed for it (about 100 ms together).
UNNEEDED = ("scipy.sparse", "scipy.linalg", "scipy.spatial", "torch", "nnunetv2", "monai", "dash", "SimpleITK")


def test_eval_loads_only_what_it_uses(tmp_path: Path) -> None:
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[4:10, 4:10, 4:10] = 2
    labels[6:8, 6:8, 6:8] = 3
    for folder in ("gt", "pred"):
        write_nifti(tmp_path / folder / "BraTS-GLI-00000-000.nii.gz", labels)
    probe = (
        "import sys\n"
        "from segkit.cli import main\n"
        "try:\n"
        f"    main(['eval', {str(tmp_path / 'gt')!r}, {str(tmp_path / 'pred')!r}, '-o', {str(tmp_path / 'out')!r},"
        " '--skip-nnunet'])\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        f"print(sorted(m for m in {UNNEEDED!r} if m in sys.modules))\n"
        "print('figure' if 'matplotlib.backends.backend_agg' in sys.modules else 'no figure')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    loaded, figure = done.stdout.strip().splitlines()[-2:]
    assert loaded == "[]"
    assert figure == "figure"  # the check saw a real run, figure included
    assert (tmp_path / "out" / "lesion_metrics.png").is_file()
