import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# The suite's learners (and the runs it starts) neither read nor build the user's compiled-loss
# cache (learner/compiled.py): a background compile per config would load CI's two cores.
# tests/test_compiled_cache.py points it at its own folders.
os.environ["MUESLI_RAY_CACHE"] = "off"
