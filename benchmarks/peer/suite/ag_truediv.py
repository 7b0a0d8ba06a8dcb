"""Ported from HIPS/autograd tests/test_truediv.py (MIT licence, (c) the autograd
authors) by benchmarks/peer/port.py: imports rewritten, bodies unchanged
except PATCHES in port.py."""
# This file is to check that future division works.

from ag_binary_ops import arg_pairs

import numpy as np
from peer_util import check_grads


def test_div():
    fun = lambda x, y: x / y
    make_gap_from_zero = lambda x: np.sqrt(x**2 + 0.5)
    for arg1, arg2 in arg_pairs():
        arg1 = make_gap_from_zero(arg1)
        arg2 = make_gap_from_zero(arg2)
        check_grads(fun)(arg1, arg2)
