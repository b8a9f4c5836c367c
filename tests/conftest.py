import torch

# The test models are tiny: one thread is fastest and keeps timings stable on 2-core CI machines.
torch.set_num_threads(1)
