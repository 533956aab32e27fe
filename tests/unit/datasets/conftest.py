"""Keep torch to the two cores the test machines have, so parallel suites do not oversubscribe."""

import torch

torch.set_num_threads(2)
