"""Every test runs the Python modules, whatever a local `segengine native build` left in the
source tree (tests replace functions of those modules, which compiled ones do not allow);
tests/unit/test_native_build.py compares the compiled core with them. SEGENGINE_NATIVE set
beforehand wins: SEGENGINE_NATIVE=auto runs the tests on a local build."""

import os

os.environ.setdefault("SEGENGINE_NATIVE", "off")
