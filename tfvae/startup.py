"""TensorFlow's start-up, without the lines that only say there is no GPU.

On a machine without an NVIDIA driver, importing TensorFlow and listing its
devices prints "Could not find cuda drivers" and "failed call to cuInit: ...
CUDA error" to standard error, which read like failures on a CPU machine (and
land in every notebook's first output). :func:`quiet_tensorflow` hides them
there, and only there.
"""

from __future__ import annotations

import os
import sys
import tempfile


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up messages hidden where there is no
    NVIDIA driver (they only say that there is no GPU: "Could not find cuda
    drivers", "failed call to cuInit"). Elsewhere, or when the import fails,
    they are shown."""
    if "tensorflow" in sys.modules:
        return
    if not sys.platform.startswith("linux") or os.path.exists("/proc/driver/nvidia"):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA's own start-up (cuInit) logs here
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
