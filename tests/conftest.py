import os

import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

from tests.builds import builds, default_builds, plan_files, stf_checkpoint  # noqa: E402,F401  (session fixtures)
