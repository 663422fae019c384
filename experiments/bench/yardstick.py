"""The PyTorch yardstick of ``experiments.benchmark``
(``shared/bench/torch_maml_reference.py``): its network and inputs, and the
tfmeta algorithm that each of its orders computes.

The yardstick is MAML as a PyTorch user writes it: the 4-block conv net of
the MAML paper with 2x2 max-pooling and 64 filters, on random 28x28x1 images
(Omniglot's shape). ``--order=2`` differentiates through the inner loop
(second-order MAML), ``--order=1`` does not (first-order MAML). An algorithm
not named here has no yardstick row; its figures stand beside MAML's.

  python -m experiments.benchmark --torch_python=../.venv-torch/bin/python
"""

IMAGE_SHAPE = (28, 28, 1)
FILTERS = 64
# The yardstick's order beside each tfmeta algorithm it computes.
ORDERS = {"maml": 2, "fomaml": 1}
# The order whose meta-step the benchmark's FLOP count describes.
SECOND_ORDER = 2
