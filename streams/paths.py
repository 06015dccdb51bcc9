"""Where the project's data files live (schemas/, infra/)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("APS_HOME", Path(__file__).resolve().parent.parent))
SCHEMA_DIR = PROJECT_ROOT / "schemas"
INFRA_DIR = PROJECT_ROOT / "infra"
