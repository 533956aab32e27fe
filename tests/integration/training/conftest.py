"""Run torch on one thread: the test machines have two cores shared with other suites, and with
more threads than free cores torch's thread barriers make small ops orders of magnitude slower."""

import torch

torch.set_num_threads(1)
