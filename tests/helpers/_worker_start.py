"""How the tests start DataLoader workers and helper processes: EMP_DATA_TEST_WORKER_START overrides
the platform's default (`make sanitize` sets spawn: under the preloaded ASan runtime, GCC 12's, a
forked child hangs when another thread of the test process held the sanitizer's allocator lock at
the fork). conftest.py applies it as the default start method."""
import os

WORKER_START_OVERRIDE = os.environ.get("EMP_DATA_TEST_WORKER_START") or None
