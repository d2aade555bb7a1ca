"""Test configuration shared by pytest and nbval.

The notebooks read TFVAE_QUICK: under test they run in quick mode (fewer
epochs and examples, same code path) and say so in their output.
"""

import os

os.environ.setdefault("TFVAE_QUICK", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
