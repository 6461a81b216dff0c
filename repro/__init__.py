"""Prompt tuning (Lester et al., 2021) on a frozen T5, and its ablations.

Importing the package pins the CPU kernels so that one command gives the same bits on every
x86-64 CPU with AVX2 (``REPRO_CPU_NUMERICS=native`` opts out): :mod:`repro.numerics`.
"""

from repro.numerics import pin_cpu_numerics

pin_cpu_numerics()
