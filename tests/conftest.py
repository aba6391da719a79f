import os

import torch

# Without a GPU, Triton kernels run on CPU tensors through the interpreter; it must be chosen before any test module
# imports triton (the kernels are bound to it when they are decorated).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
