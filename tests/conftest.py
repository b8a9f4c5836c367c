import os

import torch

# The test models are tiny: one thread is fastest and keeps timings stable on 2-core CI machines.
torch.set_num_threads(1)

# bench/gpu.sh runs the model tests on a GPU: QW_TEST_DEVICE=cuda makes it every tensor's default device.
if os.environ.get("QW_TEST_DEVICE"):
    torch.set_default_device(os.environ["QW_TEST_DEVICE"])
