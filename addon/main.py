"""The file mitmproxy loads (`mitmdump -s addon/main.py`): it only builds the addons."""

import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addon.wiring import build_addons  # noqa: E402

addons = build_addons()
